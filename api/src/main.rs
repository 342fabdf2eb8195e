//! The `parley` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

/// A request allocates and frees many small buffers across threads; mimalloc does that with
/// less contention and fragmentation than the system allocator (glibc's malloc was a quarter of
/// the server's CPU under the message-posting benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    parley_api::cli::main().await
}
