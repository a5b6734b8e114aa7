//! Standard output and standard error as the CLI uses them: never a panic when either is closed.
//!
//! `println!` and `eprintln!` panic when the write fails, which is what a reader that went away
//! causes (`ddb status | head -0`: the pipe is broken, EPIPE, and the process died with exit
//! 101). The CLI writes instead through `write!` on the locked streams, which returns the error:
//!
//! * data on stdout: a broken pipe ends the command quietly, as it does for PostgreSQL's tools
//!   and the shell's own: the reader asked for no more. `main` recognises the error with
//!   [`is_closed_output`] and exits 0 without a message;
//! * notes, tags and errors on stderr ([`note`]): written if they can be, and dropped if stderr
//!   is gone, so a command whose stderr is closed still does all its work.
//!
//! A stream that is closed outright (`ddb status >&-`) is another case: the next file the
//! process opens (a socket to a node) would get its descriptor, and output meant for the
//! terminal would go down that socket. [`reserve_std_streams`] puts `/dev/null` in any of the
//! three standard descriptors that is not open before anything else is opened.

use std::fmt::Arguments;
use std::io::Write;

/// Writes one line to stderr, and drops it if stderr cannot take it.
pub fn note(line: Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(line).and_then(|()| err.write_all(b"\n"));
}

/// Whether a command failed only because its output went away (a broken pipe on stdout).
pub fn is_closed_output(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Opens `/dev/null` on each of the descriptors 0, 1 and 2 that is closed, so that no file or
/// socket the process opens later takes the place of a standard stream.
pub fn reserve_std_streams() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether `fd` is open; it changes nothing.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        let flags = if fd == 0 {
            libc::O_RDONLY
        } else {
            libc::O_WRONLY
        };
        // SAFETY: a constant, NUL-terminated path. `open` returns the lowest free descriptor,
        // which is `fd` since the ones below it are open by now.
        let opened = unsafe { libc::open(c"/dev/null".as_ptr(), flags) };
        if opened >= 0 && opened != fd {
            // SAFETY: dup2 onto the standard descriptor, then close the spare copy we opened.
            unsafe {
                libc::dup2(opened, fd);
                libc::close(opened);
            }
        }
    }
}
