//! Keys to actions. In raw mode Ctrl-C arrives as a key, not as SIGINT, so it is mapped here.
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::app::Action;

/// The action a key press asks for, if any.
pub fn action_for(key: KeyEvent) -> Option<Action> {
    // Terminals with the kitty protocol also report releases and repeats; act on presses.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return match key.code {
            KeyCode::Char('c') | KeyCode::Char('d') => Some(Action::Quit),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::F(10) => Action::Quit,
        KeyCode::Char('s') => Action::CycleSort,
        KeyCode::Char('p') | KeyCode::Char(' ') => Action::TogglePause,
        KeyCode::Char('r') => Action::Reset,
        KeyCode::Char('f') => Action::Flamegraph,
        KeyCode::Char('a') => Action::ToggleWindow,
        KeyCode::Char('v') => Action::ToggleVmapOnly,
        KeyCode::Tab => Action::NextView,
        KeyCode::BackTab => Action::PreviousView,
        KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => Action::ToggleHelp,
        KeyCode::Esc => Action::CloseHelp,
        KeyCode::Up | KeyCode::Char('k') => Action::ScrollUp,
        KeyCode::Down | KeyCode::Char('j') => Action::ScrollDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::ScrollHome,
        KeyCode::End | KeyCode::Char('G') => Action::ScrollEnd,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn documented_keys() {
        assert_eq!(action_for(press(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(
            action_for(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(
            action_for(press(KeyCode::Char('s'))),
            Some(Action::CycleSort)
        );
        assert_eq!(
            action_for(press(KeyCode::Char(' '))),
            Some(Action::TogglePause)
        );
        assert_eq!(
            action_for(press(KeyCode::Char('p'))),
            Some(Action::TogglePause)
        );
        assert_eq!(action_for(press(KeyCode::Char('r'))), Some(Action::Reset));
        assert_eq!(
            action_for(press(KeyCode::Char('f'))),
            Some(Action::Flamegraph)
        );
        assert_eq!(action_for(press(KeyCode::Tab)), Some(Action::NextView));
        assert_eq!(
            action_for(press(KeyCode::Char('?'))),
            Some(Action::ToggleHelp)
        );
        assert_eq!(action_for(press(KeyCode::Char('x'))), None);
        assert_eq!(
            action_for(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL)),
            None
        );
        let mut release = press(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(action_for(release), None);
    }
}
