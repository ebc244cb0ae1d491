//! What a model's name says about its size and precision: "Llama-2-13b" has 13 billion
//! parameters, "Mixtral-8x7B" eight 7B experts, "Qwen3-32B-FP8" one byte per weight.

/// Billions of parameters named in `name`, or `None`. Counts attached to a letter are not
/// totals ("A3B" in "Qwen3-30B-A3B" is the active count, "E4B" an effective one), so a
/// count must start the name or follow a separator. The largest count in the name wins.
pub fn param_count(name: &str) -> Option<f64> {
    let lower = name.to_ascii_lowercase();
    let b = lower.as_bytes();
    let sep = |c: u8| matches!(c, b'-' | b'_' | b'/' | b'.' | b' ' | b':' | b'@');
    let mut best: Option<f64> = None;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && !sep(b[i - 1])) {
            i += 1;
            continue;
        }
        let (first, mut j) = number(b, i);
        let mut experts = None;
        let mut value = first;
        if j < b.len() && b[j] == b'x' && j + 1 < b.len() && b[j + 1].is_ascii_digit() {
            let (size, k) = number(b, j + 1);
            experts = Some(first);
            value = size;
            j = k;
        }
        // Divisor from the suffix to billions.
        let divisor = match b.get(j) {
            Some(b'b') => Some(1.0),
            Some(b'm') if experts.is_none() => Some(1000.0),
            _ => None,
        };
        let ends = b.get(j + 1).is_none_or(|c| sep(*c));
        if let (Some(divisor), true) = (divisor, ends) {
            // "8x7B" repeats the shared attention in every expert's name; Mixtral's real
            // totals are 80-83% of the product (46.7B for 8x7B, 141B for 8x22B), so we take
            // 80% to stay a lower bound.
            let billions = match experts {
                Some(e) => e * value * 0.8,
                None => value / divisor,
            };
            if billions > 0.0 {
                best = Some(best.map_or(billions, |b: f64| b.max(billions)));
            }
        }
        i = j.max(i + 1);
    }
    best
}

fn number(b: &[u8], start: usize) -> (f64, usize) {
    let mut j = start;
    while j < b.len()
        && (b[j].is_ascii_digit() || (b[j] == b'.' && b.get(j + 1).is_some_and(u8::is_ascii_digit)))
    {
        j += 1;
    }
    let text = std::str::from_utf8(&b[start..j]).unwrap_or("0");
    (text.parse().unwrap_or(0.0), j)
}

/// Bytes per weight implied by quantisation words in `text` (a repo id, model name or
/// server command), or `None` when nothing says so.
pub fn weight_bytes_hint(text: &str) -> Option<(f64, &'static str)> {
    let lower = text.to_ascii_lowercase();
    let tokens: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    let has = |t: &str| tokens.contains(&t);
    const FOUR_BIT: &[&str] = &[
        "fp4", "nvfp4", "mxfp4", "int4", "4bit", "awq", "gptq", "nf4", "q4", "q4k", "w4a16", "bnb",
    ];
    const EIGHT_BIT: &[&str] = &["fp8", "int8", "8bit", "w8a8", "w8a16", "q8", "fp8dynamic"];
    if let Some(t) = FOUR_BIT.iter().find(|t| has(t)) {
        return Some((0.5, t));
    }
    for (t, bytes) in [("q2", 0.25), ("q3", 0.375), ("q5", 0.625), ("q6", 0.75)] {
        if has(t) {
            return Some((bytes, t));
        }
    }
    if let Some(t) = EIGHT_BIT.iter().find(|t| has(t)) {
        return Some((1.0, t));
    }
    // "Weights Only Quantized" (TRT-LLM's int8 weight-only mode) without a bit width.
    if lower.contains("weights only quant")
        || lower.contains("weights-only-quant")
        || lower.contains("weight_only")
    {
        return Some((1.0, "weights-only quantisation"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parameter_counts() {
        assert_eq!(param_count("meta-llama/Llama-2-13b-hf"), Some(13.0));
        assert_eq!(param_count("Qwen/Qwen3-30B-A3B"), Some(30.0));
        assert_eq!(param_count("Qwen/Qwen3-Embedding-0.6B"), Some(0.6));
        assert_eq!(param_count("TinyLlama/TinyLlama-1.1B-Chat-v1.0"), Some(1.1));
        assert_eq!(param_count("Llama 3.3 70B Instruct"), Some(70.0));
        assert_eq!(param_count("NSQL 350M"), Some(0.35));
        let mixtral = param_count("mistralai/Mixtral-8x7B-v0.1").unwrap();
        assert!((mixtral - 44.8).abs() < 0.01, "{mixtral}");
        assert_eq!(param_count("MiniMaxAI/MiniMax-M2.1"), None);
        assert_eq!(param_count("Qwen/Qwen2.5-7B-Instruct"), Some(7.0));
        assert_eq!(
            param_count("mistralai/Mistral-Small-24B-Instruct-2501"),
            Some(24.0)
        );
        assert_eq!(
            param_count("stabilityai/stable-diffusion-xl-base-1.0"),
            None
        );
        assert_eq!(param_count("phi-3-mini-4k-instruct"), None);
    }

    #[test]
    fn reads_quantisation_words() {
        assert_eq!(
            weight_bytes_hint("Qwen/Qwen3-32B-FP8").map(|h| h.0),
            Some(1.0)
        );
        assert_eq!(
            weight_bytes_hint("google/gemma-3-27b-it-qat-q4_0-gguf").map(|h| h.0),
            Some(0.5)
        );
        assert_eq!(
            weight_bytes_hint("TheBloke/Llama-2-13B-AWQ").map(|h| h.0),
            Some(0.5)
        );
        assert_eq!(
            weight_bytes_hint("Mixtral 8x7B Instruct TRT-LLM Weights Only Quantized").map(|h| h.0),
            Some(1.0)
        );
        assert_eq!(weight_bytes_hint("meta-llama/Llama-2-13b-hf"), None);
        assert_eq!(
            weight_bytes_hint("vllm serve x --quantization fp8").map(|h| h.0),
            Some(1.0)
        );
    }
}
