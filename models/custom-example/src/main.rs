//! strut's command line with the `Keywords` model compiled in.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut registry = strut::builtin_registry();
    strut_example_keywords::register(&mut registry);
    strut::main_with(registry)
}
