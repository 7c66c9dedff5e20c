//! One progress line per node while the probes run, on stderr, shown only
//! when stdout is a terminal so that redirected `-o json` runs stay quiet.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::verdict::Stage;

pub struct Progress {
    multi: MultiProgress,
    visible: bool,
}

/// The progress line of one node.
pub struct NodeLine {
    bar: ProgressBar,
}

impl Progress {
    pub fn new() -> Self {
        let visible = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            visible,
        }
    }

    pub fn add_node(&self, node: &str) -> NodeLine {
        let bar = self.multi.add(ProgressBar::new_spinner());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix:<24} {msg}") {
            bar.set_style(style);
        }
        bar.set_prefix(node.to_string());
        bar.set_message("Pending");
        bar.enable_steady_tick(Duration::from_millis(200));
        NodeLine { bar }
    }

    /// Prints a message above the progress lines, or plainly to stderr when
    /// they are hidden.
    pub fn println(&self, message: &str) {
        if self.visible {
            let _ = self.multi.println(message);
        } else {
            eprintln!("{message}");
        }
    }
}

impl NodeLine {
    /// Shows `stage`; `running_since` and `window` give the elapsed part of
    /// the collection window while running.
    pub fn show(&self, stage: &Stage, running_since: Option<Instant>, window: Duration) {
        self.bar.set_message(stage_text(
            stage,
            running_since.map(|since| since.elapsed()),
            window,
        ));
        if matches!(stage, Stage::Done | Stage::Failed) {
            self.bar.finish();
        }
    }

    pub fn fail(&self, code: &str) {
        self.bar.finish_with_message(format!("Failed ({code})"));
    }
}

/// Text of a progress line: `Pending`, `Scheduled`, `Pulling image`,
/// `Running 12s/30s`, `Done`, `Failed`.
pub fn stage_text(stage: &Stage, running_for: Option<Duration>, window: Duration) -> String {
    match stage {
        Stage::Pending => "Pending".into(),
        Stage::Scheduled => "Scheduled".into(),
        Stage::Pulling => "Pulling image".into(),
        Stage::Running => {
            let elapsed = running_for
                .unwrap_or_default()
                .as_secs()
                .min(window.as_secs());
            format!("Running {elapsed}s/{}s", window.as_secs())
        }
        Stage::Done => "Done".into(),
        Stage::Failed => "Failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_line_shows_elapsed_of_window() {
        assert_eq!(
            stage_text(
                &Stage::Running,
                Some(Duration::from_secs(12)),
                Duration::from_secs(30)
            ),
            "Running 12s/30s"
        );
        assert_eq!(
            stage_text(
                &Stage::Running,
                Some(Duration::from_secs(45)),
                Duration::from_secs(30)
            ),
            "Running 30s/30s"
        );
        assert_eq!(
            stage_text(&Stage::Pulling, None, Duration::from_secs(30)),
            "Pulling image"
        );
    }
}
