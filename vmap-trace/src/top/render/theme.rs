//! Styles. With colour off (`--no-color`, NO_COLOR) only modifiers remain (bold, reverse,
//! dim, underline), which no-color.org allows and every terminal renders: nothing the view
//! says depends on colour alone.
use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy)]
pub struct Theme {
    color: bool,
}

impl Theme {
    pub fn new(color: bool) -> Theme {
        Theme { color }
    }

    fn fg(self, style: Style, color: Color) -> Style {
        if self.color {
            style.fg(color)
        } else {
            style
        }
    }

    /// Labels in the header ("kernel", "design", ...).
    pub fn label(self) -> Style {
        self.fg(Style::default(), Color::Cyan)
    }

    /// Values in the header.
    pub fn value(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    /// Section titles.
    pub fn title(self) -> Style {
        self.fg(Style::default().add_modifier(Modifier::BOLD), Color::Cyan)
    }

    /// Borders and separators.
    pub fn frame(self) -> Style {
        self.fg(Style::default(), Color::DarkGray)
    }

    /// Column headers of tables.
    pub fn table_header(self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    /// The column the table is sorted by.
    pub fn sorted_header(self) -> Style {
        self.fg(
            Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            Color::Yellow,
        )
    }

    /// Rows about vmap locks, the subject of this tool.
    pub fn vmap_row(self) -> Style {
        self.fg(Style::default(), Color::Yellow)
    }

    /// Rows with nothing in the shown window.
    pub fn idle_row(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }

    /// The selected view in the tab line.
    pub fn selected_tab(self) -> Style {
        self.fg(
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            Color::Cyan,
        )
    }

    /// Something that needs attention: lost events, errors, pause.
    pub fn alert(self) -> Style {
        self.fg(Style::default().add_modifier(Modifier::BOLD), Color::Red)
    }

    pub fn paused(self) -> Style {
        self.fg(
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            Color::Yellow,
        )
    }

    /// Bars and the sparkline.
    pub fn bar(self) -> Style {
        self.fg(Style::default(), Color::Green)
    }

    /// Secondary text (hints, the verdict when unavailable).
    pub fn dim(self) -> Style {
        if self.color {
            Style::default().fg(Color::DarkGray)
        } else {
            Style::default().add_modifier(Modifier::DIM)
        }
    }

    /// Key names in the footer and help.
    pub fn key(self) -> Style {
        self.fg(Style::default().add_modifier(Modifier::BOLD), Color::Cyan)
    }
}
