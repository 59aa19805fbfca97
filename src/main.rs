// One audited exception (jemalloc's configuration symbol, below); the
// library forbids unsafe code outright.
#![deny(unsafe_code)]

/// jemalloc, not glibc's malloc: an idle client leaves behind the memory of
/// its task, buffers and session when it parks, a few hundred bytes of it
/// staying (see `frontend::parking`). glibc places those survivors between
/// the freed chunks, so few pages empty out and the process stays at about
/// 2.6 KB per idle client even after `malloc_trim`; jemalloc keeps objects
/// of one size together and returns emptied pages on its own (864 bytes per
/// added idle client, 851 each at 18,000; benches/idle.sh).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: a background thread returns
/// emptied pages to the OS within about a second (`dirty_decay_ms`), so an
/// idle process shrinks without a thread of ours allocating to trigger it;
/// `muzzy_decay_ms:0` returns them outright instead of in two steps.
/// Overridden at run time by the `_RJEM_MALLOC_CONF` environment variable.
#[allow(unsafe_code)]
#[export_name = "_rjem_malloc_conf"]
pub static ALLOCATOR_OPTIONS: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    pgtenant::cli::run()
}
