use strut_model::Registry;

/// Every model class compiled into this binary. A team that embeds its own
/// model builds a binary like this one that also registers its class.
pub fn builtin_registry() -> Registry {
    let mut registry = Registry::new();
    strut_builtins::register(&mut registry);
    strut_candle::register(&mut registry);
    registry
}
