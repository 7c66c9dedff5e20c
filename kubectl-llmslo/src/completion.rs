//! Shell completion: static scripts for the `kubectl-llmslo` binary and
//! the dynamic `__complete` protocol that kubectl uses for plugins.
//!
//! kubectl 1.26 and later complete the arguments of `kubectl llmslo` by
//! running an executable named `kubectl_complete-llmslo` from PATH with the
//! words after `llmslo`. The last word is the one being completed, and it
//! is empty when the cursor follows a space. kubectl reads one candidate
//! per line (`value<TAB>description`) and an optional last line
//! `:<directive>` with a Cobra `ShellCompDirective`. The
//! `kubectl_complete-llmslo` script in `completions/` runs
//! `kubectl-llmslo __complete "$@"`, which prints that format.

use std::{
    ffi::OsString,
    io::{self, Write},
};

use clap_complete::engine::CompletionCandidate;

use crate::{
    cli::CompletionArgs,
    exit::Status,
    invocation::{self, PLUGIN_FILE_NAME},
    stdout,
};

/// Hidden first argument that selects the dynamic completion protocol, the
/// name Cobra-based tools use for it.
pub const COMPLETE_SUBCOMMAND: &str = "__complete";

/// Cobra's `ShellCompDirectiveNoFileComp`: offer only the printed
/// candidates, never file names.
const DIRECTIVE_NO_FILE_COMPLETION: u32 = 4;

/// Cobra's `ShellCompDirectiveDefault`: the shell may fall back to file
/// names when no candidate fits.
const DIRECTIVE_DEFAULT: u32 = 0;

/// Prints the static completion script of `args.shell` for the
/// `kubectl-llmslo` command.
pub fn print_script(args: CompletionArgs) -> anyhow::Result<Status> {
    let mut command = invocation::command(PLUGIN_FILE_NAME);
    // clap_complete panics when its writer fails, so the script is built in
    // memory and written here, where a closed pipe can end it quietly.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, PLUGIN_FILE_NAME, &mut script);
    stdout::print(&script)?;
    Ok(Status::Ok)
}

/// Prints the candidates for a `__complete` request: `words` are the
/// arguments after the command name, the last being the word under the
/// cursor.
///
/// # Errors
///
/// Fails only when stdout cannot be written for a reason other than a
/// closed pipe.
pub fn complete(words: Vec<OsString>) -> anyhow::Result<Status> {
    let candidates = candidates_for(words);
    let mut output = Vec::new();
    write_cobra_output(&mut output, &candidates)?;
    stdout::print(&output)?;
    Ok(Status::Ok)
}

fn candidates_for(words: Vec<OsString>) -> Vec<CompletionCandidate> {
    let mut args = Vec::with_capacity(words.len() + 1);
    args.push(OsString::from(PLUGIN_FILE_NAME));
    args.extend(words);
    // With no words at all, complete an empty word after the command name.
    if args.len() == 1 {
        args.push(OsString::new());
    }
    let index = args.len() - 1;

    let mut command = invocation::command(PLUGIN_FILE_NAME);
    let current_dir = std::env::current_dir().ok();
    match clap_complete::engine::complete(&mut command, args, index, current_dir.as_deref()) {
        Ok(candidates) => candidates,
        Err(error) => {
            tracing::debug!(%error, "completion found no candidates");
            Vec::new()
        }
    }
}

/// Writes candidates in Cobra's `__complete` format. Values that contain a
/// line break or a tab cannot be represented and are left out.
fn write_cobra_output(
    output: &mut impl Write,
    candidates: &[CompletionCandidate],
) -> io::Result<()> {
    let mut offers_paths = false;
    for candidate in candidates
        .iter()
        .filter(|candidate| !candidate.is_hide_set())
    {
        let value = candidate.get_value().to_string_lossy();
        if value.contains(['\n', '\t']) {
            continue;
        }
        offers_paths |= value.ends_with(std::path::MAIN_SEPARATOR);
        match candidate.get_help() {
            Some(help) => {
                let help = help.to_string();
                let first_line = help.lines().next().unwrap_or_default().replace('\t', " ");
                writeln!(output, "{value}\t{first_line}")?;
            }
            None => writeln!(output, "{value}")?,
        }
    }
    // A directory candidate needs the shell's file completion to descend
    // into it; everything else is a closed list.
    let directive = if offers_paths {
        DIRECTIVE_DEFAULT
    } else {
        DIRECTIVE_NO_FILE_COMPLETION
    };
    writeln!(output, ":{directive}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete_words(words: &[&str]) -> String {
        let candidates = candidates_for(words.iter().map(OsString::from).collect());
        let mut output = Vec::new();
        write_cobra_output(&mut output, &candidates).unwrap();
        String::from_utf8(output).unwrap()
    }

    #[test]
    fn subcommands_complete_with_descriptions() {
        let output = complete_words(&["di"]);
        assert!(output.starts_with("diagnose\tProbe a workload"), "{output}");
        assert!(output.ends_with(":4\n"), "{output}");
    }

    #[test]
    fn empty_word_lists_every_subcommand() {
        let output = complete_words(&[""]);
        for subcommand in ["diagnose", "doctor", "cleanup", "version", "completion"] {
            assert!(
                output.lines().any(|line| line.starts_with(subcommand)),
                "{subcommand} missing from {output}"
            );
        }
    }

    #[test]
    fn flags_of_subcommand_complete() {
        let output = complete_words(&["diagnose", "--dur"]);
        assert!(
            output.lines().any(|line| line.starts_with("--duration\t")),
            "{output}"
        );
    }

    #[test]
    fn enum_values_complete() {
        let output = complete_words(&["version", "-o", ""]);
        for format in ["table", "wide", "json", "yaml"] {
            assert!(
                output.lines().any(|line| line.starts_with(format)),
                "{format} missing from {output}"
            );
        }
    }

    #[test]
    fn hidden_protocol_word_is_not_offered() {
        let output = complete_words(&["__"]);
        assert!(!output.contains(COMPLETE_SUBCOMMAND), "{output}");
    }
}
