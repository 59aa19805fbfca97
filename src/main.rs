fn main() -> std::process::ExitCode {
    pgtenant::cli::run()
}
