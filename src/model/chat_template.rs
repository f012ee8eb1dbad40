//! Chat templates: Hugging Face style Jinja templates rendered with minijinja.
//!
//! The environment mirrors what `transformers` sets up for `apply_chat_template`:
//!
//! * `trim_blocks = true`, `lstrip_blocks = true`, `keep_trailing_newline = false`;
//! * Python string/dict/list methods (`.strip()`, `.split()`, `.startswith()`, `.items()`, ...)
//!   through `minijinja_contrib::pycompat::unknown_method_callback`;
//! * the globals `raise_exception(msg)` (fails the render with `msg`) and
//!   `strftime_now(fmt)`;
//! * the context variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`.
//!
//! `strftime_now` deliberately does **not** read the clock: it formats the fixed date
//! [`FIXED_DATE`] (2024-07-26 00:00:00, the default of the Llama 3.1 templates) so that a
//! prompt, and hence a benchmark run, is reproducible byte for byte.
//!
//! Not provided: `tools`, `documents` and the `tojson` filter (minijinja's `json` feature);
//! templates that only test `{% if tools %}` work because undefined values are falsy.

use anyhow::{anyhow, Context};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// One chat turn: `role` is `system`, `user`, `assistant` (or whatever the template knows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The date `strftime_now` formats, as (year, month, day, hour, minute, second).
pub const FIXED_DATE: (i32, u32, u32, u32, u32, u32) = (2024, 7, 26, 0, 0, 0);

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template. Compilation happens once in [`ChatTemplate::new`].
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct RenderContext<'a> {
    messages: &'a [ChatMessage],
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
}

impl ChatTemplate {
    /// Compile `source`. `bos_token` / `eos_token` are the texts the template sees as
    /// `bos_token` / `eos_token` (empty strings when `None`, as in transformers when the
    /// tokenizer has no such token).
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| anyhow!("chat template failed to parse: {}", describe(&e)))?;
        Ok(Self { env, bos_token, eos_token })
    }

    /// Render `messages`; with `add_generation_prompt` the template appends the header
    /// that opens the assistant's turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> anyhow::Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).context("chat template missing from its environment")?;
        let ctx = RenderContext {
            messages,
            add_generation_prompt,
            bos_token: self.bos_token.as_deref().unwrap_or(""),
            eos_token: self.eos_token.as_deref().unwrap_or(""),
        };
        template.render(ctx).map_err(|e| anyhow!("chat template failed to render: {}", describe(&e)))
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }
}

/// minijinja's `Display` omits the source chain; include it (e.g. a raise_exception message
/// wrapped by the call site) and the line number.
fn describe(e: &Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(fmt)` on the fixed [`FIXED_DATE`]. Supports `%d %-d %e %m %-m %Y %y %B %b
/// %h %A %a %H %I %M %S %p %j %F %D %T %%`; any other directive is an error.
fn strftime_now(format: String) -> Result<Value, Error> {
    strftime_fixed(&format).map(Value::from)
}

fn strftime_fixed(format: &str) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    let (year, month, day, hour, minute, second) = FIXED_DATE;
    let weekday = weekday_monday0(year, month, day);
    let yday = day_of_year(year, month, day);
    let month_name = MONTHS[(month - 1) as usize];
    let weekday_name = WEEKDAYS[weekday as usize];
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut directive = chars.next();
        let no_pad = directive == Some('-');
        if no_pad {
            directive = chars.next();
        }
        let pad2 = |v: u32| {
            if no_pad {
                v.to_string()
            } else {
                format!("{v:02}")
            }
        };
        match directive {
            Some('d') => out.push_str(&pad2(day)),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('m') => out.push_str(&pad2(month)),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday_name),
            Some('a') => out.push_str(&weekday_name[..3]),
            Some('H') => out.push_str(&pad2(hour)),
            Some('I') => out.push_str(&pad2(hour12)),
            Some('M') => out.push_str(&pad2(minute)),
            Some('S') => out.push_str(&pad2(second)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('j') => {
                if no_pad {
                    out.push_str(&yday.to_string())
                } else {
                    out.push_str(&format!("{yday:03}"))
                }
            }
            Some('F') => out.push_str(&format!("{year:04}-{month:02}-{day:02}")),
            Some('D') => out.push_str(&format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100))),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('%') if !no_pad => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: unsupported directive %{}{} in {format:?}",
                        if no_pad { "-" } else { "" },
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn day_of_year(year: i32, month: u32, day: u32) -> u32 {
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = u32::from(month > 2 && is_leap(year));
    CUM[(month - 1) as usize] + day + leap
}

/// 0 = Monday (Sakamoto's method).
fn weekday_monday0(year: i32, month: u32, day: u32) -> u32 {
    const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    let sunday0 = (y + y / 4 - y / 100 + y / 400 + T[(month - 1) as usize] + day as i32) % 7;
    ((sunday0 + 6) % 7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (tokenizer_config.json), with its default system prompt.
    const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    /// DeepSeek-R1-Distill (Qwen/Llama) template, written from memory of the
    /// tokenizer_config.json of deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (the revision that
    /// appends `<think>\n` to the generation prompt). The Jinja string literals keep their
    /// `\n` escapes, as in the JSON-decoded original.
    const R1_DISTILL_TEMPLATE: &str = r#"{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}"#;

    const R1_BOS: &str = "<｜begin▁of▁sentence｜>";
    const R1_EOS: &str = "<｜end▁of▁sentence｜>";

    #[test]
    fn chatml_default_system_prompt() {
        let t = ChatTemplate::new(SMOLLM2_TEMPLATE, Some("<|im_start|>".into()), Some("<|im_end|>".into())).unwrap();
        let out = t.render(&[ChatMessage::user("What is 2+2?")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_explicit_system_and_no_generation_prompt() {
        let t = ChatTemplate::new(SMOLLM2_TEMPLATE, None, None).unwrap();
        let out = t
            .render(
                &[ChatMessage::system("Be terse."), ChatMessage::user("Hi"), ChatMessage::assistant("Hello.")],
                false,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        );
    }

    #[test]
    fn r1_distill_generation_prompt() {
        let t = ChatTemplate::new(R1_DISTILL_TEMPLATE, Some(R1_BOS.into()), Some(R1_EOS.into())).unwrap();
        let out = t.render(&[ChatMessage::user("What is 2+2?")], true).unwrap();
        assert_eq!(out, "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜><think>\n");
    }

    #[test]
    fn r1_distill_system_and_history_strips_reasoning() {
        let t = ChatTemplate::new(R1_DISTILL_TEMPLATE, Some(R1_BOS.into()), Some(R1_EOS.into())).unwrap();
        let out = t
            .render(
                &[
                    ChatMessage::system("SYS"),
                    ChatMessage::user("Q1"),
                    ChatMessage::assistant("<think>\nhmm\n</think>\n\nA1"),
                    ChatMessage::user("Q2"),
                ],
                false,
            )
            .unwrap();
        assert_eq!(out, "<｜begin▁of▁sentence｜>SYS<｜User｜>Q1<｜Assistant｜>\n\nA1<｜end▁of▁sentence｜><｜User｜>Q2");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let src = "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('Tool role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        assert_eq!(t.render(&[ChatMessage::user("ok")], false).unwrap(), "ok");
        let err = t.render(&[ChatMessage::new("tool", "x")], false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("Tool role not supported"), "{msg}");
    }

    #[test]
    fn parse_error_is_reported() {
        let err = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
        assert!(err.to_string().contains("failed to parse"), "{err:#}");
    }

    #[test]
    fn trim_and_lstrip_blocks() {
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let out = t.render(&[ChatMessage::user("a"), ChatMessage::user("b")], false).unwrap();
        assert_eq!(out, "U:a\nU:b\n");
    }

    #[test]
    fn python_string_methods() {
        let src = "{{ messages[0].content.strip().split(',')[1] }}|{{ messages[0].content.startswith('  x') }}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let out = t.render(&[ChatMessage::user("  x,y,z  ")], false).unwrap();
        assert_eq!(out, "y|True");
    }

    #[test]
    fn strftime_now_is_fixed() {
        let src =
            "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%A %B %-d, %Y %H:%M') }}|{{ strftime_now('%F %j') }}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let out = t.render(&[], false).unwrap();
        assert_eq!(out, "26 Jul 2024|Friday July 26, 2024 00:00|2024-07-26 208");
        assert!(t.render(&[], false).is_ok());
        let bad = ChatTemplate::new("{{ strftime_now('%Q') }}", None, None).unwrap();
        assert!(bad.render(&[], false).is_err());
    }

    #[test]
    fn chat_message_serde() {
        let m: ChatMessage = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(m, ChatMessage::user("hi"));
    }
}
