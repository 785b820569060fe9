//! Process shutdown: SIGTERM (what the kubelet sends) or Ctrl-C cancels one token that every
//! long-running task watches, so the controller releases its Lease and the agent detaches its
//! probes before exiting.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or SIGINT.
///
/// Once tokio has installed its handler for a signal, the handler stays for the life of the
/// process and a signal nobody listens for is dropped. In a container the process is pid 1 of
/// its pid namespace, which no signal it handles can kill, so if the listening task died without
/// cancelling, SIGTERM would never stop the process again. Hence the token is cancelled before
/// anything else is done with the signal (logging can fail: stderr may be a broken pipe), and
/// also whenever the task ends without having cancelled it.
pub fn on_signal() -> std::io::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let cancel = cancel.drop_guard();
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        drop(cancel);
        tracing::info!(signal = which, "shutting down");
    });
    Ok(token)
}
