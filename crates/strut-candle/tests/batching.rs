//! Continuous batching on the real SmolLM2-135M-Instruct Q4_1 GGUF, through
//! the `TextGeneration` capability: sequences in one batch produce what
//! each produces alone, whenever they join and whoever leaves, and shared
//! prompt prefixes are reused.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use strut_model::capabilities::{
    GenerateRequest, GenerationEvent, GenerationStream, Prompt, SamplingParams, TextGeneration,
};
use strut_model::{
    AsyncModel, ErrorKind, GenerationStats, InitContext, ModelInstance, RequestContext,
    SchedulerStep, Telemetry, TelemetrySink,
};

/// What the model reported: every scheduler step and prefix lookup.
#[derive(Default)]
struct Recorder {
    steps: Mutex<Vec<SchedulerStep>>,
    lookups: Mutex<Vec<(usize, usize)>>,
}

impl TelemetrySink for Recorder {
    fn batch(&self, _size: usize) {}
    fn generation(&self, _stats: &GenerationStats) {}
    fn scheduler_step(&self, step: &SchedulerStep) {
        self.steps.lock().unwrap().push(*step);
    }
    fn prefix_lookup(&self, prompt_tokens: usize, reused: usize) {
        self.lookups.lock().unwrap().push((prompt_tokens, reused));
    }
}

fn smollm(extra: Value) -> (Box<dyn AsyncModel>, Arc<Recorder>) {
    let mut candle = json!({"weights": smollm_gguf()});
    candle
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let recorder = Arc::new(Recorder::default());
    let mut init = InitContext::new(config("LlamaGenerator", candle), no_data_dir());
    init.telemetry = Telemetry::new(recorder.clone());
    let mut instance = registry().create("LlamaGenerator", init).unwrap();
    instance.load().unwrap();
    match instance {
        ModelInstance::Async(model) => (model, recorder),
        ModelInstance::Blocking(_) => panic!("candle models are async"),
    }
}

const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "My favourite recipe for pancakes needs",
    "In 1969, the first humans to walk on the Moon",
    "A haiku about the sea:",
];

async fn start(
    model_gen: &dyn TextGeneration,
    prompt: &str,
    tokens: u32,
    ctx: &RequestContext,
) -> GenerationStream {
    let request = GenerateRequest {
        prompt: Prompt::Text(prompt.into()),
        prompt_tokens: None,
        params: SamplingParams {
            temperature: 0.0,
            max_tokens: Some(tokens),
            ignore_eos: true,
            ..Default::default()
        },
    };
    model_gen.generate(request, ctx).await.unwrap()
}

/// The token ids of a stream, to its end.
async fn ids(events: GenerationStream) -> Vec<u32> {
    ids_after(Vec::new(), events).await
}

/// The same, after `ids` were already read from it.
async fn ids_after(mut ids: Vec<u32>, mut events: GenerationStream) -> Vec<u32> {
    while let Some(event) = events.next().await {
        match event.unwrap() {
            GenerationEvent::Token { id, .. } => ids.push(id),
            GenerationEvent::Finished { usage, .. } => {
                assert_eq!(usage.completion_tokens as usize, ids.len());
                return ids;
            }
        }
    }
    panic!("the stream ended without a finish event");
}

/// Each prompt's greedy tokens, generated one at a time.
async fn alone(model_gen: &dyn TextGeneration, prompts: &[&str], tokens: u32) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    for p in prompts {
        out.push(ids(start(model_gen, p, tokens, &ctx()).await).await);
    }
    out
}

#[tokio::test]
async fn a_batch_of_eight_gives_each_prompt_its_own_greedy_tokens() {
    let (model, recorder) = smollm(json!({"prefix_cache": false}));
    let model_gen = model.text_generation().unwrap();
    let want = alone(model_gen.as_ref(), &PROMPTS, 24).await;
    // All eight at once, then four and four more that join once the first
    // four are decoding.
    let mut streams = Vec::new();
    for p in PROMPTS {
        streams.push(start(model_gen.as_ref(), p, 24, &ctx()).await);
    }
    let together = futures::future::join_all(streams.into_iter().map(ids)).await;
    assert_eq!(together, want);
    let peak = recorder
        .steps
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.running)
        .max();
    assert!(peak >= Some(7), "the eight never ran together: {peak:?}");

    let mut first = Vec::new();
    for p in &PROMPTS[..4] {
        let mut s = start(model_gen.as_ref(), p, 24, &ctx()).await;
        // Its first token: the sequence is in the batch, decoding.
        let head = match s.next().await {
            Some(Ok(GenerationEvent::Token { id, .. })) => id,
            other => panic!("{other:?}"),
        };
        first.push((head, s));
    }
    let mut late = Vec::new();
    for p in &PROMPTS[4..] {
        late.push(start(model_gen.as_ref(), p, 24, &ctx()).await);
    }
    let early =
        futures::future::join_all(first.into_iter().map(|(head, s)| ids_after(vec![head], s)));
    let (early, late) = tokio::join!(early, futures::future::join_all(late.into_iter().map(ids)));
    assert_eq!([early, late].concat(), want);
}

#[tokio::test]
async fn cancelling_one_sequence_leaves_the_others_unchanged() {
    let (model, _) = smollm(json!({"prefix_cache": false}));
    let model_gen = model.text_generation().unwrap();
    let prompts = &PROMPTS[..4];
    let want = alone(model_gen.as_ref(), prompts, 32).await;
    let doomed = ctx();
    let mut streams = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let c = if i == 1 { doomed.clone() } else { ctx() };
        streams.push(start(model_gen.as_ref(), p, 32, &c).await);
    }
    let mut cancelled = streams.remove(1);
    let mut seen = 0;
    while seen < 3 {
        if let Some(Ok(GenerationEvent::Token { .. })) = cancelled.next().await {
            seen += 1;
        }
    }
    doomed.cancellation().cancel();
    let mut last = None;
    while let Some(event) = cancelled.next().await {
        last = Some(event);
    }
    assert_eq!(last.unwrap().unwrap_err().kind(), ErrorKind::Cancelled);
    let rest = futures::future::join_all(streams.into_iter().map(ids)).await;
    assert_eq!(rest, [want[0].clone(), want[2].clone(), want[3].clone()]);
}

#[tokio::test]
async fn a_shared_prompt_prefix_is_reused_and_changes_nothing() {
    let system = "You are a careful assistant who answers questions about geography, \
                  history and science in one short sentence, without any preamble. ";
    let prompts: Vec<String> = ["What is the capital of Italy?", "Who wrote Hamlet?"]
        .iter()
        .map(|q| format!("{system}{q}"))
        .collect();
    let (plain, _) = smollm(json!({"prefix_cache": false}));
    let plain = plain.text_generation().unwrap();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let want = alone(plain.as_ref(), &refs, 16).await;

    let (model, recorder) = smollm(json!({"prefix_cache": true}));
    let model_gen = model.text_generation().unwrap();
    let got = alone(model_gen.as_ref(), &refs, 16).await;
    assert_eq!(got, want);
    let lookups = recorder.lookups.lock().unwrap().clone();
    assert_eq!(lookups.len(), 2, "{lookups:?}");
    assert_eq!(lookups[0].1, 0, "nothing to reuse at first: {lookups:?}");
    let (prompt, reused) = lookups[1];
    assert!(
        reused >= 20 && reused < prompt,
        "the system prompt's tokens should be reused: {lookups:?}"
    );
    let cached = recorder
        .steps
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .prefix_cached_tokens;
    assert!(cached > 0);
}

#[tokio::test]
async fn past_the_kv_budget_requests_wait_their_turn() {
    // Room for one 200-token request at a time.
    let (model, recorder) = smollm(json!({
        "context_length": 256, "kv_cache_tokens": 300, "prefix_cache": false
    }));
    let model_gen = model.text_generation().unwrap();
    let mut streams = Vec::new();
    for p in &PROMPTS[..3] {
        streams.push(start(model_gen.as_ref(), p, 190, &ctx()).await);
    }
    for out in futures::future::join_all(streams.into_iter().map(ids)).await {
        assert_eq!(out.len(), 190);
    }
    let steps = recorder.steps.lock().unwrap();
    assert!(
        steps
            .iter()
            .all(|s| s.running <= 1 && s.kv_used_tokens <= 300)
    );
    assert!(steps.iter().any(|s| s.waiting >= 1), "nobody waited");
    assert_eq!(steps.last().unwrap().kv_budget_tokens, 300);
}

#[tokio::test]
async fn a_long_prompt_is_prefilled_in_chunks_between_decode_steps() {
    let (model, recorder) = smollm(json!({"max_step_tokens": 64, "prefix_cache": false}));
    let model_gen = model.text_generation().unwrap();
    // A running stream, then a prompt of several hundred tokens.
    let mut running = start(model_gen.as_ref(), PROMPTS[0], 40, &ctx()).await;
    let head = match running.next().await {
        Some(Ok(GenerationEvent::Token { id, .. })) => id,
        other => panic!("{other:?}"),
    };
    let long = PROMPTS[1].repeat(40);
    let late = start(model_gen.as_ref(), &long, 4, &ctx()).await;
    let (rest, late) = tokio::join!(ids_after(vec![head], running), ids(late));
    assert_eq!((rest.len(), late.len()), (40, 4));
    let steps = recorder.steps.lock().unwrap();
    let prefilling: Vec<_> = steps.iter().filter(|s| s.prefill_tokens > 0).collect();
    // The long prompt took several steps, none over the budget, and the
    // running stream decoded in each of them.
    assert!(prefilling.len() >= 4, "{} prefill steps", prefilling.len());
    for s in &prefilling[1..] {
        assert!(s.prefill_tokens + s.decode_tokens <= 64, "{s:?}");
        assert!(s.decode_tokens >= 1, "decode starved: {s:?}");
    }
}

#[tokio::test]
async fn a_prompt_is_shared_while_its_sequence_still_generates() {
    let (model, recorder) = smollm(json!({"prefix_cache": true}));
    let model_gen = model.text_generation().unwrap();
    let system = "You are a careful assistant who answers questions about geography, \
                  history and science in one short sentence, without any preamble. ";
    let mut first = start(
        model_gen.as_ref(),
        &format!("{system}Who wrote Hamlet?"),
        48,
        &ctx(),
    )
    .await;
    let head = match first.next().await {
        Some(Ok(GenerationEvent::Token { id, .. })) => id,
        other => panic!("{other:?}"),
    };
    // The first is decoding; the second shares its system prompt.
    let second = start(
        model_gen.as_ref(),
        &format!("{system}What is the capital of Italy?"),
        4,
        &ctx(),
    )
    .await;
    let (rest, second) = tokio::join!(ids_after(vec![head], first), ids(second));
    assert_eq!((rest.len(), second.len()), (48, 4));
    let lookups = recorder.lookups.lock().unwrap().clone();
    assert_eq!(lookups[0].1, 0, "{lookups:?}");
    assert!(
        lookups[1].1 >= 20,
        "the running sequence's prompt was not shared: {lookups:?}"
    );
}
