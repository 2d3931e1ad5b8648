//! What is known of models without asking their provider: context windows.

/// The context window assumed for a model this table does not know.
pub const DEFAULT_CONTEXT_WINDOW: u64 = 128_000;

/// The context window of `model` in tokens, by its published family (a tier's `context-tokens` overrides it).
pub fn context_window(model: &str) -> u64 {
    let m = model.to_ascii_lowercase();
    let table: &[(&str, u64)] = &[
        ("claude", 200_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-5", 400_000),
        ("gpt-4o", 128_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4", 200_000),
    ];
    table.iter().find(|(prefix, _)| m.starts_with(prefix)).map(|&(_, n)| n).unwrap_or(DEFAULT_CONTEXT_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_families_and_the_default() {
        assert_eq!(context_window("claude-sonnet-4-5"), 200_000);
        assert_eq!(context_window("gpt-4.1-mini"), 1_047_576);
        assert_eq!(context_window("some-local-model"), DEFAULT_CONTEXT_WINDOW);
    }
}
