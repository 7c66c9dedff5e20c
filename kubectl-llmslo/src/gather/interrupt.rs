//! Counting Ctrl-C presses: the first stops the run cleanly, the second
//! exits at once.

use tokio::sync::watch;

#[derive(Clone)]
pub struct Interrupts {
    count: watch::Receiver<u32>,
}

impl Interrupts {
    /// Starts counting SIGINT. From now on Ctrl-C no longer ends the
    /// process by itself, so install it only once there is something to
    /// clean up.
    pub fn install() -> Self {
        let (sender, count) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                if let Err(error) = tokio::signal::ctrl_c().await {
                    tracing::warn!(%error, "failed to listen for Ctrl-C");
                    return;
                }
                sender.send_modify(|count| *count += 1);
            }
        });
        Self { count }
    }

    pub fn count(&self) -> u32 {
        *self.count.borrow()
    }

    /// Waits until at least `count` interrupts have arrived.
    pub async fn reached(&mut self, count: u32) {
        if self.count.wait_for(|seen| *seen >= count).await.is_err() {
            // The listener is gone; no interrupt will ever arrive.
            std::future::pending::<()>().await;
        }
    }
}
