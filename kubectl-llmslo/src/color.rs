//! Whether output gets ANSI colors and styles.
//!
//! It reads the variables that clap's help output also reads (through
//! anstream), in this order: `NO_COLOR` set to a non-empty value turns
//! colors off (<https://no-color.org>), `CLICOLOR_FORCE` set to anything
//! but `0` turns them on for pipes and files too, `CLICOLOR=0` and
//! `TERM=dumb` turn them off, and otherwise only a terminal gets them.

use std::{
    ffi::OsString,
    io::{IsTerminal as _, stderr, stdout},
};

/// The standard stream that output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Returns true when text written to `stream` may carry ANSI colors.
///
/// # Usage
///
/// Report code calls it once per stream and turns table styling off when
/// it returns false, for example with comfy-table's `force_no_tty`.
pub fn use_color(stream: Stream) -> bool {
    let is_terminal = match stream {
        Stream::Stdout => stdout().is_terminal(),
        Stream::Stderr => stderr().is_terminal(),
    };
    decide(
        &ColorEnv {
            no_color: std::env::var_os("NO_COLOR"),
            clicolor_force: std::env::var_os("CLICOLOR_FORCE"),
            clicolor: std::env::var_os("CLICOLOR"),
            term: std::env::var_os("TERM"),
        },
        is_terminal,
    )
}

/// The environment variables that decide about colors.
#[derive(Debug, Default)]
struct ColorEnv {
    no_color: Option<OsString>,
    clicolor_force: Option<OsString>,
    clicolor: Option<OsString>,
    term: Option<OsString>,
}

fn decide(env: &ColorEnv, is_terminal: bool) -> bool {
    let is_set = |value: &Option<OsString>| value.as_ref().is_some_and(|value| !value.is_empty());
    if is_set(&env.no_color) {
        return false;
    }
    if is_set(&env.clicolor_force) && env.clicolor_force.as_deref() != Some("0".as_ref()) {
        return true;
    }
    if env.clicolor.as_deref() == Some("0".as_ref()) || env.term.as_deref() == Some("dumb".as_ref())
    {
        return false;
    }
    is_terminal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ColorEnv {
        let mut env = ColorEnv::default();
        for (name, value) in pairs {
            let value = Some(OsString::from(value));
            match *name {
                "NO_COLOR" => env.no_color = value,
                "CLICOLOR_FORCE" => env.clicolor_force = value,
                "CLICOLOR" => env.clicolor = value,
                "TERM" => env.term = value,
                other => panic!("unknown variable {other}"),
            }
        }
        env
    }

    #[test]
    fn terminal_gets_color() {
        assert!(decide(&env(&[("TERM", "xterm-256color")]), true));
    }

    #[test]
    fn pipe_gets_no_color() {
        assert!(!decide(&env(&[("TERM", "xterm-256color")]), false));
    }

    #[test]
    fn no_color_wins_over_terminal_and_force() {
        assert!(!decide(&env(&[("NO_COLOR", "1")]), true));
        assert!(!decide(
            &env(&[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]),
            true
        ));
    }

    #[test]
    fn empty_no_color_is_ignored() {
        assert!(decide(&env(&[("NO_COLOR", "")]), true));
    }

    #[test]
    fn clicolor_force_colors_pipes() {
        assert!(decide(&env(&[("CLICOLOR_FORCE", "1")]), false));
        assert!(!decide(&env(&[("CLICOLOR_FORCE", "0")]), false));
    }

    #[test]
    fn clicolor_zero_turns_color_off() {
        assert!(!decide(&env(&[("CLICOLOR", "0")]), true));
    }

    #[test]
    fn dumb_terminal_gets_no_color() {
        assert!(!decide(&env(&[("TERM", "dumb")]), true));
    }
}
