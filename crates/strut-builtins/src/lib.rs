//! Built-in models that need no weights: `Echo` (returns its input) and
//! `Stream` (a streaming example that yields numbered chunks).

mod echo;
mod stream;

pub use echo::Echo;
pub use stream::{Stream, StreamInput};

use strut_model::Registry;

/// Adds the built-in model classes to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register_async(Echo::CLASS, |_ctx| Ok(Echo));
    registry.register(Stream::CLASS, |_ctx| Ok(Stream));
}
