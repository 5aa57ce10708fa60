//! A scrollable table with explicit column widths.
//!
//! Widths are computed here rather than left to the layout solver so that text columns are
//! cut with a visible `…` (ratatui cuts silently) and numeric columns never are.
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Row, Table};
use ratatui::Frame;

use crate::top::format::truncate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone, Copy)]
pub enum Width {
    /// Always this wide.
    Fixed(u16),
    /// Shares what is left: at least `min`, and no more than the widest cell needs.
    Flex { min: u16 },
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub width: Width,
    pub align: Align,
    /// Whether the table is sorted by this column.
    pub sorted: bool,
    /// A suffix starting at this separator survives cutting (the `@c2ba40` that tells two
    /// same-named locks apart).
    pub keep_suffix: Option<&'static str>,
}

impl Column {
    pub fn fixed(header: &'static str, width: u16) -> Column {
        Column {
            header,
            width: Width::Fixed(width),
            align: Align::Right,
            sorted: false,
            keep_suffix: None,
        }
    }

    pub fn text(header: &'static str, min: u16) -> Column {
        Column {
            header,
            width: Width::Flex { min },
            align: Align::Left,
            sorted: false,
            keep_suffix: None,
        }
    }

    pub fn left(mut self) -> Column {
        self.align = Align::Left;
        self
    }

    pub fn sorted_if(mut self, sorted: bool) -> Column {
        self.sorted = sorted;
        self
    }

    pub fn keep_suffix(mut self, separator: &'static str) -> Column {
        self.keep_suffix = Some(separator);
        self
    }
}

pub struct TableRow {
    pub cells: Vec<String>,
    pub style: Style,
    /// Styles for single cells (column index), over the row's.
    pub cell_styles: Vec<(usize, Style)>,
}

impl TableRow {
    pub fn new(cells: Vec<String>, style: Style) -> TableRow {
        TableRow {
            cells,
            style,
            cell_styles: Vec::new(),
        }
    }

    pub fn with_cell_style(mut self, column: usize, style: Style) -> TableRow {
        self.cell_styles.push((column, style));
        self
    }
}

const SPACING: u16 = 1;

/// Column widths for `total` cells: fixed columns first; flexible ones get their minimum,
/// then, in column order, what their widest cell needs (the first text column is the row's
/// name: it is cut last); whatever is left widens the last flexible column.
pub fn widths(columns: &[Column], rows: &[TableRow], total: u16) -> Vec<u16> {
    let gaps = SPACING * columns.len().saturating_sub(1) as u16;
    let fixed: u16 = columns
        .iter()
        .map(|c| if let Width::Fixed(w) = c.width { w } else { 0 })
        .sum();
    let mut left = total.saturating_sub(gaps).saturating_sub(fixed);
    let need = |i: usize, c: &Column| -> u16 {
        let widest = rows
            .iter()
            .filter_map(|r| r.cells.get(i))
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0);
        widest.max(c.header.len()).min(u16::MAX as usize) as u16
    };
    let mut out: Vec<u16> = columns
        .iter()
        .map(|c| if let Width::Fixed(w) = c.width { w } else { 0 })
        .collect();
    let flex: Vec<(usize, u16, u16)> = columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c.width {
            Width::Flex { min } => Some((i, min, need(i, c).max(min))),
            Width::Fixed(_) => None,
        })
        .collect();
    for &(i, min, _) in &flex {
        let w = min.min(left);
        out[i] = w;
        left -= w;
    }
    for &(i, _, need) in &flex {
        let more = need.saturating_sub(out[i]).min(left);
        out[i] += more;
        left -= more;
    }
    if let Some(&(i, _, _)) = flex.last() {
        out[i] += left;
    }
    out
}

/// Draw `rows` (the visible page, see `page`) under a header row. Column widths fit the rows
/// shown, so only what is on screen is ever formatted.
pub fn render(
    frame: &mut Frame,
    area: Rect,
    columns: &[Column],
    rows: &[TableRow],
    header: Style,
    sorted: Style,
) {
    let w = widths(columns, rows, area.width);
    let cell = |text: &str, i: usize| -> Line<'static> {
        let text = cut(text, w[i] as usize, columns[i].keep_suffix);
        match columns[i].align {
            Align::Left => Line::from(text),
            Align::Right => Line::from(text).right_aligned(),
        }
    };
    let header_row = Row::new(columns.iter().enumerate().map(|(i, c)| {
        let style = if c.sorted { sorted } else { header };
        cell(c.header, i).style(style)
    }));
    let body: Vec<Row> = rows
        .iter()
        .map(|r| {
            Row::new(r.cells.iter().enumerate().map(|(i, s)| {
                let line = cell(s, i);
                match r.cell_styles.iter().find(|(c, _)| *c == i) {
                    Some(&(_, style)) => line.style(style),
                    None => line,
                }
            }))
            .style(r.style)
        })
        .collect();
    let table = Table::new(body, w.iter().map(|&w| Constraint::Length(w)))
        .header(header_row)
        .column_spacing(SPACING);
    frame.render_widget(table, area);
}

/// The page of `items` a table in `area` shows (under its header row): `scroll` is clamped
/// to the last full page and written back; also returns the page size, for page up/down.
pub fn page<'a, T>(items: &'a [T], area: Rect, scroll: &mut usize) -> (&'a [T], usize) {
    let visible = area.height.saturating_sub(1) as usize;
    *scroll = clamp_scroll(*scroll, items.len(), visible);
    let end = (*scroll + visible).min(items.len());
    (&items[*scroll..end], visible)
}

/// `text` in `width` cells; with `keep_suffix`, the part from the last separator on is kept
/// whole when it fits, and the head is cut instead.
fn cut(text: &str, width: usize, keep_suffix: Option<&str>) -> String {
    if let Some(at) = keep_suffix.and_then(|sep| text.rfind(sep)) {
        let (head, tail) = text.split_at(at);
        let tail_len = tail.chars().count();
        if text.chars().count() > width && tail_len < width {
            return format!("{}{tail}", truncate(head, width - tail_len));
        }
    }
    truncate(text, width)
}

/// The first row to show so that `scroll` stays within the rows (End scrolls to the last page).
pub fn clamp_scroll(scroll: usize, rows: usize, visible: usize) -> usize {
    scroll.min(rows.saturating_sub(visible))
}

/// A one-line message where a table has no rows.
pub fn empty(frame: &mut Frame, area: Rect, message: Vec<Span<'static>>) {
    frame.render_widget(
        ratatui::widgets::Paragraph::new(Line::from(message))
            .wrap(ratatui::widgets::Wrap { trim: true }),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> TableRow {
        TableRow::new(
            cells.iter().map(|s| s.to_string()).collect(),
            Style::default(),
        )
    }

    #[test]
    fn fixed_columns_keep_their_width_and_flex_share_the_rest() {
        let cols = [
            Column::text("lock", 8),
            Column::fixed("n", 5),
            Column::text("caller", 6),
        ];
        let rows = [row(&["vmap_area_lock", "1", "alloc_vmap_area"])];
        // 40 - 2 gaps - 5 fixed = 33 for two flex columns needing 14 and 15: the rest to the last
        assert_eq!(widths(&cols, &rows, 40), vec![14, 5, 19]);
        // narrow: minimums, then the first column's need before the second's
        assert_eq!(widths(&cols, &rows, 24), vec![11, 5, 6]);
        assert_eq!(widths(&cols, &rows, 30), vec![14, 5, 9]);
        // too narrow for the minimums: no panic, fixed columns win
        let w = widths(&cols, &rows, 6);
        assert_eq!(w[1], 5);
    }

    #[test]
    fn cutting_keeps_the_distinguishing_suffix() {
        assert_eq!(
            cut("rwsem(write) in dup_mmap @2658", 20, Some(" @")),
            "rwsem(write) … @2658"
        );
        assert_eq!(
            cut("rwsem(write) in dup_mmap @2658", 40, Some(" @")),
            "rwsem(write) in dup_mmap @2658"
        );
        assert_eq!(cut("no suffix here at all", 10, Some(" @")), "no suffix…");
        assert_eq!(cut("x @123456", 5, Some(" @")), "x @1…");
    }

    #[test]
    fn scroll_clamps_to_the_last_page() {
        assert_eq!(clamp_scroll(usize::MAX, 30, 10), 20);
        assert_eq!(clamp_scroll(3, 5, 10), 0);
        assert_eq!(clamp_scroll(4, 30, 10), 4);
        let items: Vec<u32> = (0..30).collect();
        let area = Rect::new(0, 0, 80, 11); // a header and 10 rows
        let mut scroll = usize::MAX;
        let (shown, visible) = page(&items, area, &mut scroll);
        assert_eq!(
            (shown.first(), shown.len(), visible, scroll),
            (Some(&20), 10, 10, 20)
        );
        let mut scroll = 25;
        assert_eq!(page(&items[..5], area, &mut scroll).0.len(), 5);
        assert_eq!(scroll, 0);
        assert_eq!(page(&items, Rect::new(0, 0, 80, 0), &mut scroll).0.len(), 0);
    }
}
