//! MCP tool definitions: the `tools` of a manifest.
//!
//! A tool is the Model Context Protocol's `Tool` (protocol revision
//! 2025-06-18 and later): `name`, optional `title`, `description`,
//! `inputSchema` (a JSON Schema object whose `type` is `"object"`), optional
//! `outputSchema` (the same shape) and optional `annotations` (the
//! `ToolAnnotations` hints `title`, `readOnlyHint`, `destructiveHint`,
//! `idempotentHint`, `openWorldHint`). The JSON a manifest carries is exactly
//! what an MCP client's `tools/list` shows for the agent, so a manifest's
//! tools can be served as-is. Annotations are hints from the publisher and
//! never a basis for a security decision.

use serde_json::{Map, Value};

use crate::json::{field, first_unsafe_number, has_control, index, quoted};
use crate::manifest::Parser;

/// The longest tool name.
pub const MAX_TOOL_NAME: usize = 128;
/// The longest tool description.
pub const MAX_TOOL_DESCRIPTION: usize = 4096;
/// The most tools a manifest declares.
pub const MAX_TOOLS: usize = 256;

pub(crate) const TOOL_FIELDS: [&str; 6] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];
const ANNOTATION_FIELDS: [&str; 5] = [
    "title",
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
];

/// One MCP tool.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// `[A-Za-z0-9_.-]{1,128}`, unique in the manifest.
    pub name: String,
    /// A display name.
    pub title: Option<String>,
    /// What the tool does (for models and people).
    pub description: String,
    /// JSON Schema of the arguments (`"type": "object"`).
    pub input_schema: Map<String, Value>,
    /// JSON Schema of structured results, if the tool declares one.
    pub output_schema: Option<Map<String, Value>>,
    /// `ToolAnnotations` hints.
    pub annotations: Option<Map<String, Value>>,
}

impl Tool {
    /// The tool as MCP spells it (what `tools/list` returns).
    pub fn to_json_value(&self) -> Value {
        let mut t = Map::new();
        t.insert("name".into(), Value::from(self.name.clone()));
        if let Some(title) = &self.title {
            t.insert("title".into(), Value::from(title.clone()));
        }
        t.insert("description".into(), Value::from(self.description.clone()));
        t.insert(
            "inputSchema".into(),
            Value::Object(self.input_schema.clone()),
        );
        if let Some(schema) = &self.output_schema {
            t.insert("outputSchema".into(), Value::Object(schema.clone()));
        }
        if let Some(a) = &self.annotations {
            t.insert("annotations".into(), Value::Object(a.clone()));
        }
        Value::Object(t)
    }
}

/// Whether `name` is a valid tool name.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl Parser {
    pub(crate) fn tools(&mut self, value: &Value) -> Option<Vec<Tool>> {
        let Value::Array(items) = value else {
            self.wrong_type("tools", "an array of tool definitions", value);
            return None;
        };
        if items.len() > MAX_TOOLS {
            self.error("tools", format!("at most {MAX_TOOLS} tools"));
            return None;
        }
        let mut tools: Vec<Tool> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let path = index("tools", i);
            match self.tool(&path, item) {
                Some(tool) => {
                    if let Some(j) = tools.iter().position(|t| t.name == tool.name) {
                        self.error(
                            field(&path, "name"),
                            format!("{} is already the name of tools[{j}]", quoted(&tool.name)),
                        );
                        ok = false;
                    }
                    tools.push(tool);
                }
                None => ok = false,
            }
        }
        ok.then_some(tools)
    }

    fn tool(&mut self, path: &str, value: &Value) -> Option<Tool> {
        let map = self.object(path, value, &TOOL_FIELDS)?;
        let mut ok = true;
        let name = match map.get("name") {
            None => {
                self.error(field(path, "name"), "required");
                None
            }
            Some(v) => {
                let p = field(path, "name");
                self.string(&p, v).and_then(|s| {
                    if valid_tool_name(s) {
                        Some(s.to_owned())
                    } else {
                        self.error(
                            &p,
                            format!(
                                "{} is not a tool name (1 to {MAX_TOOL_NAME} characters of A-Z, a-z, 0-9, _, ., -)",
                                quoted(s)
                            ),
                        );
                        None
                    }
                })
            }
        };
        let title = match map.get("title") {
            None => Some(None),
            Some(v) => self
                .text(&field(path, "title"), v, 1, 128)
                .map(|s| Some(s.to_owned())),
        };
        let description = match map.get("description") {
            None => {
                self.error(field(path, "description"), "required");
                None
            }
            Some(v) => self
                .text(&field(path, "description"), v, 0, MAX_TOOL_DESCRIPTION)
                .map(str::to_owned),
        };
        let input_schema = match map.get("inputSchema") {
            None => {
                self.error(field(path, "inputSchema"), "required");
                None
            }
            Some(v) => self.schema(&field(path, "inputSchema"), v),
        };
        let output_schema = match map.get("outputSchema") {
            None => Some(None),
            Some(v) => self.schema(&field(path, "outputSchema"), v).map(Some),
        };
        let annotations = match map.get("annotations") {
            None => Some(None),
            Some(v) => {
                let p = field(path, "annotations");
                match self.object(&p, v, &ANNOTATION_FIELDS) {
                    Some(a) => {
                        for (k, v) in a {
                            let kp = field(&p, k);
                            match (k.as_str(), v) {
                                ("title", Value::String(s)) if !has_control(s) => {}
                                ("title", _) => {
                                    self.error(kp, "must be a string without control characters");
                                    ok = false;
                                }
                                (_, Value::Bool(_)) => {}
                                (k, other) if ANNOTATION_FIELDS.contains(&k) => {
                                    self.wrong_type(&kp, "a boolean", other);
                                    ok = false;
                                }
                                _ => ok = false,
                            }
                        }
                        Some(Some(a.clone()))
                    }
                    None => None,
                }
            }
        };
        let tool = Tool {
            name: name?,
            title: title?,
            description: description?,
            input_schema: input_schema?,
            output_schema: output_schema?,
            annotations: annotations?,
        };
        ok.then_some(tool)
    }

    /// A JSON Schema object of `"type": "object"`.
    fn schema(&mut self, path: &str, value: &Value) -> Option<Map<String, Value>> {
        let Value::Object(map) = value else {
            self.wrong_type(path, "a JSON Schema object", value);
            return None;
        };
        match map.get("type") {
            Some(Value::String(t)) if t == "object" => {}
            Some(other) => {
                self.error(
                    field(path, "type"),
                    format!("must be \"object\" (MCP tool arguments are an object), not {other}"),
                );
                return None;
            }
            None => {
                self.error(
                    field(path, "type"),
                    "required: \"object\" (MCP tool arguments are an object)",
                );
                return None;
            }
        }
        if let Some(p) = first_unsafe_number(value, path) {
            self.error(
                p,
                "integers must be within ±(2^53 - 1) (they are canonicalised as IEEE doubles)",
            );
            return None;
        }
        Some(map.clone())
    }
}
