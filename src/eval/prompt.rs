//! A question as the model is prompted with it: the question, the plan's instruction, the model's
//! chat template.

use anyhow::Result;

use crate::data::Question;
use crate::model::chat_template::ChatMessage;
use crate::model::source::{encode, LoadedModel};
use crate::plan::Plan;

/// The prompt's token ids for question `q` under `plan`.
pub fn render_prompt(lm: &LoadedModel, plan: &Plan, q: &Question) -> Result<Vec<u32>> {
    let mut content = q.question.clone();
    if let Some(instr) = &plan.instruction {
        content = format!("{content}\n{instr}");
    }
    encode(&lm.tokenizer, &prompt_text(lm, content)?)
}

/// A user message as the model is prompted with it: through its chat template, if it has one.
pub fn prompt_text(lm: &LoadedModel, content: String) -> Result<String> {
    Ok(match &lm.chat_template {
        Some(t) => t.render(&[ChatMessage::user(content)], true)?,
        None => content,
    })
}
