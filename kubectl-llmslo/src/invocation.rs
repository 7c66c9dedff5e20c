//! Plugin-mode detection: the command name that help text and messages show,
//! taken from the name the binary was started under.
//!
//! kubectl runs a plugin with the plugin's path as `argv[0]`, and krew
//! installs the binary as `kubectl-llmslo` (`kubectl-llmslo.exe` on
//! Windows). Started under that file name, the CLI calls itself
//! `kubectl llmslo`, the way users type it. Under any other file name (a
//! renamed copy or a symlink such as `llmslo`) it uses that file name, so
//! that usage lines show a command the user can run. The `.exe` suffix is
//! dropped on every platform.

use std::{ffi::OsStr, path::Path, sync::OnceLock};

use clap::{ArgMatches, Command, CommandFactory as _};

use crate::cli::Cli;

/// File name, without `.exe`, under which kubectl finds the plugin on PATH.
pub const PLUGIN_FILE_NAME: &str = "kubectl-llmslo";

/// Command name shown when the binary runs as a kubectl plugin.
pub const PLUGIN_DISPLAY_NAME: &str = "kubectl llmslo";

/// Help layout of every command: the full command name and version first,
/// then clap's default sections.
const HELP_TEMPLATE: &str = "{before-help}{name} {version}\n{about-with-newline}\n{usage-heading} {usage}\n\n{all-args}{after-help}";

static DISPLAY_NAME: OnceLock<String> = OnceLock::new();

/// Returns the command name for an `argv[0]`: `kubectl llmslo` for the
/// plugin file name or when `argv[0]` is missing or not UTF-8, otherwise
/// the file name without its directory and `.exe` suffix.
pub fn display_name_for(argv0: Option<&OsStr>) -> String {
    let file_name = argv0
        .map(Path::new)
        .and_then(Path::file_name)
        .and_then(OsStr::to_str);
    let Some(file_name) = file_name else {
        return PLUGIN_DISPLAY_NAME.to_owned();
    };
    let stem = strip_exe_suffix(file_name);
    if stem.is_empty() || stem == PLUGIN_FILE_NAME {
        PLUGIN_DISPLAY_NAME.to_owned()
    } else {
        stem.to_owned()
    }
}

fn strip_exe_suffix(file_name: &str) -> &str {
    let split = file_name.len().saturating_sub(".exe".len());
    match (file_name.get(..split), file_name.get(split..)) {
        (Some(stem), Some(suffix)) if suffix.eq_ignore_ascii_case(".exe") => stem,
        _ => file_name,
    }
}

/// Records the command name of this process from `argv[0]` and returns it.
/// Later calls return the name recorded first.
pub fn init_display_name(argv0: Option<&OsStr>) -> &'static str {
    DISPLAY_NAME.get_or_init(|| display_name_for(argv0))
}

/// Returns the command name of this process, for messages that tell the
/// user what to run, or `kubectl llmslo` before [`init_display_name`] ran.
pub fn display_name() -> &'static str {
    DISPLAY_NAME
        .get()
        .map(String::as_str)
        .unwrap_or(PLUGIN_DISPLAY_NAME)
}

/// Builds the clap command under `display_name`: usage lines, `--version`
/// and the first help line of every subcommand start with it.
pub fn command(display_name: &'static str) -> Command {
    let root = Cli::command()
        .name(display_name)
        .bin_name(display_name.to_owned())
        .display_name(display_name.to_owned());
    name_subcommands(root, display_name)
}

/// Sets the display name of every subcommand to the full command line that
/// runs it, such as `kubectl llmslo diagnose`, because clap joins the names
/// with `-` by default.
fn name_subcommands(command: Command, parent: &str) -> Command {
    let command = command.help_template(HELP_TEMPLATE);
    command.mut_subcommands(|subcommand| {
        let full_name = format!("{parent} {}", subcommand.get_name());
        let subcommand = subcommand.display_name(full_name.clone());
        name_subcommands(subcommand, &full_name)
    })
}

/// Parses `args` (with `argv[0]` first) under the name that `argv[0]`
/// selects, exiting with clap's usage status and message on invalid input.
pub fn parse_args(args: Vec<std::ffi::OsString>) -> ArgMatches {
    let display_name = init_display_name(args.first().map(|arg| arg.as_os_str()));
    command(display_name).get_matches_from(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_file_name_is_kubectl_llmslo() {
        for argv0 in [
            "kubectl-llmslo",
            "/home/user/.krew/bin/kubectl-llmslo",
            "kubectl-llmslo.exe",
            "kubectl-llmslo.EXE",
        ] {
            let name = display_name_for(Some(OsStr::new(argv0)));
            assert_eq!(name, PLUGIN_DISPLAY_NAME, "argv[0] {argv0:?}");
        }
    }

    #[cfg(windows)]
    #[test]
    fn windows_path_is_plugin_name() {
        let argv0 = OsStr::new(r"C:\Users\me\.krew\bin\kubectl-llmslo.exe");
        assert_eq!(display_name_for(Some(argv0)), PLUGIN_DISPLAY_NAME);
    }

    #[test]
    fn other_file_name_is_kept() {
        let name = display_name_for(Some(OsStr::new("/usr/local/bin/llmslo")));
        assert_eq!(name, "llmslo");
        let name = display_name_for(Some(OsStr::new("llmslo-dev.exe")));
        assert_eq!(name, "llmslo-dev");
    }

    #[test]
    fn missing_argv0_falls_back_to_plugin_name() {
        assert_eq!(display_name_for(None), PLUGIN_DISPLAY_NAME);
        assert_eq!(display_name_for(Some(OsStr::new(""))), PLUGIN_DISPLAY_NAME);
        assert_eq!(
            display_name_for(Some(OsStr::new(".exe"))),
            PLUGIN_DISPLAY_NAME
        );
    }

    #[test]
    fn help_starts_with_command_name() {
        let help = command(PLUGIN_DISPLAY_NAME).render_help().to_string();
        assert!(help.starts_with("kubectl llmslo "), "{help}");
        assert!(help.contains("Usage: kubectl llmslo "), "{help}");
    }

    #[test]
    fn subcommand_help_names_full_command() {
        let mut command = command(PLUGIN_DISPLAY_NAME);
        command.build();
        let diagnose = command
            .find_subcommand_mut("diagnose")
            .expect("diagnose subcommand exists");
        let help = diagnose.render_help().to_string();
        assert!(help.starts_with("kubectl llmslo diagnose "), "{help}");
        assert!(help.contains("Usage: kubectl llmslo diagnose "), "{help}");
    }

    #[test]
    fn version_flag_uses_command_name() {
        let version = command("llmslo").render_version();
        assert_eq!(version, format!("llmslo {}\n", env!("CARGO_PKG_VERSION")));
    }
}
