//! What the command-line tools of both sides share about their terminal.
//!
//! [`output_may_be_cut`]: a one-shot command whose output goes to `head`, a
//! closed pager or a `grep -q` ends as Unix tools do when its reader leaves
//! — silently, by `SIGPIPE` — instead of panicking in `println!` on the
//! broken pipe (Rust ignores `SIGPIPE`, so each write after the reader is
//! gone fails with `EPIPE`, and `println!` panics on any failed write).
//!
//! Only for one-shot commands: a service (`sargs run`, `sargs-hq run`) keeps
//! Rust's default, so that no lost reader ends it. Network sockets are not
//! affected either way: the standard library writes them with
//! `MSG_NOSIGNAL`, and a peer that goes away is an error to handle, never a
//! signal.

/// Restores the default action of `SIGPIPE` for this process: its first
/// write to a pipe with no reader ends it (exit by signal 13, as `cat` does).
pub fn output_may_be_cut() {
    // SAFETY: sets a signal's disposition to the default action before any
    // other thread exists or handler is installed; no Rust invariant depends
    // on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
