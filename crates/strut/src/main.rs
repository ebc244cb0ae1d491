use std::process::ExitCode;

fn main() -> ExitCode {
    strut::main_with(strut::builtin_registry())
}
