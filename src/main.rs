fn main() -> std::process::ExitCode {
    unitwarden::cli::main()
}
