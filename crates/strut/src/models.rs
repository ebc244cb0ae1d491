use strut_model::Registry;

/// Every model class compiled into this binary. A team that embeds its own
/// model builds a binary like this one that also registers its class.
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::new();
    strut_builtins::register(&mut registry);
    #[cfg(feature = "candle")]
    strut_candle::register(&mut registry);
    registry
}

/// strut's candle classes, named here because a binary built without the
/// `candle` feature has no other record of them.
const CANDLE_CLASSES: [&str; 2] = ["SentenceEmbedder", "LlamaGenerator"];

/// Why `class` is missing from a registry, when the reason is that it is one
/// of strut's candle models and this binary was built without them: a
/// config written for the stock binary should say so, not just "unknown".
pub(crate) fn missing_builtin(class: &str) -> Option<String> {
    (!cfg!(feature = "candle") && CANDLE_CLASSES.contains(&class)).then(|| {
        format!(
            "model class `{class}` is one of strut's built-in candle models, and this \
             binary was built without the `candle` feature; rebuild it with \
             `--features candle` (on by default in the `strut` binary)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candle_classes_named_here_are_the_registered_ones() {
        let registry = builtin_registry();
        for class in CANDLE_CLASSES {
            assert_eq!(
                registry.contains(class),
                cfg!(feature = "candle"),
                "{class}"
            );
            assert_eq!(missing_builtin(class).is_some(), !cfg!(feature = "candle"));
        }
        assert_eq!(missing_builtin("Echo"), None);
    }
}
