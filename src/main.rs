// One audited exception (glibc's malloc_trim, below); the library forbids
// unsafe code outright.
#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pgtenant::app::set_memory_release(release_free_memory);
    pgtenant::cli::run()
}

/// glibc's malloc keeps freed chunks that lie between live ones resident
/// (the relay buffers idle clients gave back, between their sessions'
/// other allocations) until asked to return their pages to the OS. The
/// proxy asks once after a wave of clients went idle, never per transaction.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions on its caller; it takes
    // glibc's own arena locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
