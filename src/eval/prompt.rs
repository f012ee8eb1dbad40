//! A question as the model is prompted with it: the plan's system message, the question and the
//! plan's instruction, through the model's chat template.

use anyhow::Result;

use crate::data::Question;
use crate::model::chat_template::ChatMessage;
use crate::model::source::{encode, Prompting};
use crate::plan::Plan;

/// The prompt's token ids for question `q` under `plan`.
pub fn render_prompt(lm: &impl Prompting, plan: &Plan, q: &Question) -> Result<Vec<u32>> {
    let mut content = q.question.clone();
    if let Some(instr) = &plan.instruction {
        content = format!("{content}\n{instr}");
    }
    encode(lm.tokenizer(), &prompt_text(lm, plan.system.as_deref(), content)?)
}

/// A user message (after an optional system message) as the model is prompted with it: through
/// its chat template, if it has one; else the two texts one after the other.
pub fn prompt_text(lm: &impl Prompting, system: Option<&str>, content: String) -> Result<String> {
    Ok(match (lm.chat_template(), system) {
        (Some(t), None) => t.render(&[ChatMessage::user(content)], true)?,
        (Some(t), Some(s)) => t.render(&[ChatMessage::system(s), ChatMessage::user(content)], true)?,
        (None, None) => content,
        (None, Some(s)) => format!("{s}\n\n{content}"),
    })
}
