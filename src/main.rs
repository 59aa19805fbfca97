#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pgtenant::cli::run()
}
