//! Tool calling on `/v1/chat/completions`: calls parsed out of the output
//! (whole and streamed), tools handed to the model, conversations that
//! carry calls and results, the refusals, and a required or named call
//! enforced on the real SmolLM2 through a template that renders tools.

use serde_json::{Value, json};
use strut_model::capabilities::Prompt;

use super::{assert_error, normalise, post, serve};
use crate::common;

const CHAT: &str = "/v1/chat/completions";

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time"}},
    ])
}

const TWO_CALLS: &str = "say:Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": \
    {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n{\"name\": \
    \"get_time\", \"arguments\": {}}\n</tool_call>";

fn chunks(text: &str) -> Vec<Value> {
    normalise(text, "chatcmpl-")
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}

#[tokio::test]
async fn calls_in_the_output_come_back_as_tool_calls_whole_and_streamed() {
    let served = serve("Caller").await;
    let body = json!({"messages": [{"role": "user", "content": TWO_CALLS}], "tools": tools()});
    let reply = post(&served.router, CHAT, &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let doc = reply.json();
    let choice = &doc["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{doc}");
    assert_eq!(choice["message"]["content"], "Checking.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{doc}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "celsius"}));
    assert_eq!(
        calls[1]["function"],
        json!({"name": "get_time", "arguments": "{}"})
    );
    let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert!(
        ids.iter().all(|id| id.starts_with("call_")) && ids[0] != ids[1],
        "{ids:?}"
    );

    // The model got the tools, in the request's order.
    let seen = served.probe.requests.lock().unwrap().pop().unwrap();
    let Prompt::Chat { tools: offered, .. } = seen.prompt else {
        panic!("a chat prompt")
    };
    let names: Vec<&str> = offered.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(offered[0].description.as_deref(), Some("Weather now"));
    assert_eq!(offered[1].parameters, None);
    assert_eq!(seen.params.constraint, None, "auto constrains nothing");

    // Streamed: the text before the calls as content, each call whole once
    // complete, with its index; `tool_calls` ends the choice.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let reply = post(
        &served.router,
        "/production/sync/v1/chat/completions",
        &streamed,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let chunks = chunks(&reply.text);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Checking.");
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 2, "{}", reply.text);
    assert_eq!(
        (deltas[0]["index"].as_u64(), deltas[1]["index"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    assert_eq!(
        deltas[0]["function"]["arguments"],
        calls[0]["function"]["arguments"]
    );
    assert_eq!(deltas[1]["function"]["name"], "get_time");
    assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    assert!(reply.text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn text_stays_text_and_tool_choice_none_hides_the_tools() {
    let served = serve("Caller").await;
    // Text that only looks like a tag, and a broken call, are the model's
    // text, not calls.
    for said in ["No call <tool here.", "<tool_call>{oops}</tool_call>"] {
        let body = json!({"messages": [{"role": "user", "content": format!("say:{said}")}],
                          "tools": tools()});
        let doc = post(&served.router, CHAT, &body).await.json();
        assert_eq!(doc["choices"][0]["message"]["content"], said, "{doc}");
        assert_eq!(doc["choices"][0]["finish_reason"], "stop");
        assert!(
            doc["choices"][0]["message"].get("tool_calls").is_none(),
            "{doc}"
        );
    }

    let none = json!({"messages": [{"role": "user", "content": TWO_CALLS}], "tools": tools(),
                      "tool_choice": "none"});
    let doc = post(&served.router, CHAT, &none).await.json();
    let content = doc["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.contains("<tool_call>"),
        "not parsed under none: {doc}"
    );
    let seen = served.probe.requests.lock().unwrap().pop().unwrap();
    assert!(matches!(seen.prompt, Prompt::Chat { ref tools, .. } if tools.is_empty()));
}

#[tokio::test]
async fn a_conversation_carries_calls_and_their_results_to_the_model() {
    let served = serve("Caller").await;
    let body = json!({"tools": tools(), "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
        {"role": "user", "content": "say:It is 18 C and sunny."},
    ]});
    let doc = post(&served.router, CHAT, &body).await.json();
    assert_eq!(
        doc["choices"][0]["message"]["content"], "It is 18 C and sunny.",
        "{doc}"
    );
    let seen = served.probe.requests.lock().unwrap().pop().unwrap();
    let Prompt::Chat { messages, .. } = seen.prompt else {
        panic!("a chat prompt")
    };
    assert_eq!(messages[1].content, "");
    assert_eq!(messages[1].tool_calls[0].name, "get_weather");
    assert_eq!(messages[1].tool_calls[0].arguments, "{\"city\": \"Paris\"}");
    assert_eq!(messages[2].role, "tool");
    assert_eq!(messages[2].tool_call_id.as_deref(), Some("call_1"));
}

#[tokio::test]
async fn bad_tool_requests_name_the_field() {
    let served = serve("Caller").await;
    let user = json!([{"role": "user", "content": "say:hi"}]);
    let cases = [
        (
            json!({"tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "invalid_parameter",
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "web_search"}]}),
            "invalid_parameter",
            "tools[0].type",
        ),
        (
            json!({"tools": tools(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "invalid_parameter",
            "tool_choice",
        ),
        (
            json!({"tool_choice": "required"}),
            "invalid_parameter",
            "tool_choice",
        ),
        (
            json!({"tools": tools(), "tool_choice": "sometimes"}),
            "invalid_parameter",
            "tool_choice",
        ),
        // Caller cannot constrain its output, so it cannot be made to call.
        (
            json!({"tools": tools(), "tool_choice": "required"}),
            "unsupported_parameter",
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]}),
            "invalid_parameter",
            "messages[1].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
            "invalid_parameter",
            "messages[0].tool_calls",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]}),
            "invalid_parameter",
            "messages[0].tool_calls[0]",
        ),
    ];
    for (fields, code, param) in cases {
        let mut body = json!({"messages": user});
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let reply = post(&served.router, CHAT, &body).await;
        assert_error(&reply, 400, code, Some(param));
    }

    // A model whose template renders no tools refuses them, and their traces.
    let talker = serve("Talker").await;
    let reply = post(
        &talker.router,
        CHAT,
        &json!({"messages": user, "tools": tools()}),
    )
    .await;
    let error = assert_error(&reply, 400, "unsupported_parameter", Some("tools"));
    assert!(
        error["message"].as_str().unwrap().contains("chat template"),
        "{error}"
    );
    let history = json!({"messages": [{"role": "user", "content": "x"},
        {"role": "tool", "tool_call_id": "c", "content": "r"}]});
    let reply = post(&talker.router, CHAT, &history).await;
    assert_error(&reply, 400, "unsupported_parameter", Some("messages[1]"));
    // `none` needs no template support: the tools are simply not shown.
    let none = json!({"messages": user, "tools": tools(), "tool_choice": "none"});
    assert_eq!(post(&talker.router, CHAT, &none).await.status, 200);
}

#[tokio::test]
async fn smollm2_with_a_tools_template_makes_the_required_call() {
    let (router, _d) = common::serve_model_dir("models/smollm2-tools").await;
    let messages = json!([{"role": "user", "content": "What is the weather like in Paris?"}]);
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        for seed in 0..3 {
            let body = json!({"messages": messages, "tools": tools(), "tool_choice": choice,
                              "temperature": 1.0, "seed": seed, "max_tokens": 200,
                              "parallel_tool_calls": false});
            let doc = post(&router, CHAT, &body).await.json();
            let choice_doc = &doc["choices"][0];
            assert_eq!(choice_doc["finish_reason"], "tool_calls", "{doc}");
            let calls = choice_doc["message"]["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{doc}");
            let name = calls[0]["function"]["name"].as_str().unwrap();
            let args: Value =
                serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
            match name {
                "get_weather" => {
                    assert!(args["city"].is_string(), "{args}");
                    assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
                    assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
                }
                "get_time" => assert!(choice == "required" && args.is_object(), "{doc}"),
                other => panic!("called {other}"),
            }
        }
    }

    // Streamed, the call arrives as one delta.
    let body = json!({"messages": messages, "tools": tools(), "stream": true, "max_tokens": 200,
                      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}});
    let reply = post(&router, CHAT, &body).await;
    let chunks = chunks(&reply.text);
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 1, "{}", reply.text);
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    let last_choice = chunks
        .iter()
        .rev()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(last_choice, Some("tool_calls"));

    // And SmolLM2's own template, which has no tools, refuses them.
    let (plain, _p) = common::serve_model_dir("models/smollm2").await;
    let reply = post(
        &plain,
        CHAT,
        &json!({"messages": messages, "tools": tools()}),
    )
    .await;
    assert_error(&reply, 400, "unsupported_parameter", Some("tools"));
}
