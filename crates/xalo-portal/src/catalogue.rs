//! The catalogue of administrative procedures (*thủ tục hành chính*).
//!
//! The catalogue ships as `data/procedures.json`, embedded in the binary, parsed and checked
//! once at start ([`catalogue`]); an entry that breaks a rule below stops the start with
//! `XALO-CATALOGUE-001`, naming the entry, rather than showing a broken page later.
//!
//! The agencies are those of the demo nation (ministries, Vietnam Social Security, Quảng
//! Ninh's People's Committee, its departments, a ward and its police), as they stand after
//! the 2025 reorganisation (two levels of local government; driving licences with the
//! police). Procedure codes follow the national database's format (birth registration is
//! `1.001193` there and here); most are this catalogue's own and are not to be cited as
//! the national ones.
//!
//! Each procedure has a code in the national database's format (`1.001193`), its name in
//! Vietnamese and English, the agency that receives it (a code of [`Agency`], which names
//! the exchange member where the demo nation has one), its level under Decree 42/2022
//! (`full`: *toàn trình*, everything online; `partial`: *một phần*, some step at a
//! counter), the fee in VND, the legal processing time in working days, the required
//! documents, the form as a JSON Schema, the workflow and the legal basis.
//!
//! # Forms
//!
//! A form is a flat JSON Schema object (`additionalProperties: false`) whose properties use
//! only the keywords this module enforces, so that what the schema says is what
//! [`Procedure::check_form`] checks: `type` (`string`, `integer`, `number`, `boolean`),
//! `title` (Vietnamese) and `x-title-en`, `format: date`, `enum`, `pattern`, `minLength`,
//! `maxLength`, `minimum`, `maximum`, and `x-prefill`. Any other keyword is a catalogue error.
//!
//! `x-prefill` names where the value comes from in the registries, as `subject.field`
//! ([`PREFILL_SOURCES`]): the subject is the applicant (`person`), their `mother`, `father`
//! or `spouse` in the population register, or an `enterprise` the applicant represents in
//! the business register.
//!
//! # Workflow
//!
//! Steps run in order; each has an id (the dossier's `current_step`), a name, the role that
//! does it (`receiver`, `processor`, `approver`), the agency that does it (a step at another
//! agency is an inter-agency transfer, *liên thông*) and its share of the processing time.
//! The shares add up to the legal processing time; the first step is a `receiver`'s, the
//! last an `approver`'s.
//!
//! # Search
//!
//! [`Catalogue::search`] matches words of the query against names, codes, sectors and
//! agencies, ignoring case and Vietnamese diacritics ([`fold`]: "khai sinh" and
//! "KHAI SINH" find "Đăng ký khai sinh"; đ is d), and ranks names that contain the whole
//! phrase first.

use std::collections::HashSet;
use std::sync::OnceLock;

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::Uri;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use regex_automata::meta::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use xalo_core::{Error, ErrorCode};
use xalo_web::{Lang, Page, Session};

/// The embedded catalogue.
const DATA: &str = include_str!("../data/procedures.json");

/// Where a form value may be prefilled from: `subject.field`.
pub const PREFILL_SOURCES: &[&str] = &[
    "person.personal_code",
    "person.full_name",
    "person.family_name",
    "person.middle_name",
    "person.given_name",
    "person.birth_date",
    "person.gender",
    "person.birth_place",
    "person.nationality",
    "person.residence_address",
    "person.residence_unit",
    "mother.personal_code",
    "mother.full_name",
    "mother.birth_date",
    "mother.residence_address",
    "father.personal_code",
    "father.full_name",
    "father.birth_date",
    "father.residence_address",
    "spouse.personal_code",
    "spouse.full_name",
    "spouse.birth_date",
    "spouse.residence_address",
    "enterprise.tax_code",
    "enterprise.name",
    "enterprise.address",
    "enterprise.legal_form",
    "enterprise.charter_capital",
];

/// The longest search query read, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// A text in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub vi: String,
    pub en: String,
}

impl Text {
    pub fn get(&self, lang: Lang) -> &str {
        match lang {
            Lang::Vi => &self.vi,
            Lang::En => &self.en,
        }
    }
}

/// An agency that receives or handles dossiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agency {
    /// Short code, also the first part of dossier codes: `QNI.STP`.
    pub code: String,
    pub name: Text,
    /// The exchange member the agency belongs to (`VN/GOV/000004`), where the nation has one.
    pub member: Option<String>,
}

/// The level of online service, as Decree 42/2022/NĐ-CP defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// *Toàn trình*: applied for, processed and answered entirely online.
    Full,
    /// *Một phần*: some step (a document, biometrics, the result) needs a visit.
    Partial,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Full => "full",
            Level::Partial => "partial",
        }
    }
}

/// Who does a workflow step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepRole {
    Receiver,
    Processor,
    Approver,
}

impl StepRole {
    pub const ALL: [StepRole; 3] = [StepRole::Receiver, StepRole::Processor, StepRole::Approver];

    pub fn as_str(self) -> &'static str {
        match self {
            StepRole::Receiver => "receiver",
            StepRole::Processor => "processor",
            StepRole::Approver => "approver",
        }
    }

    pub fn parse(s: &str) -> Option<StepRole> {
        StepRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One step of a procedure's workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    pub name: Text,
    pub role: StepRole,
    pub agency: String,
    /// This step's share of the legal processing time, in working days (0: the same day).
    pub days: u32,
}

/// One administrative procedure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Procedure {
    pub code: String,
    pub name: Text,
    /// The sector (*lĩnh vực*) the national database files it under.
    pub sector: Text,
    /// The agency that receives the dossier (code of an [`Agency`]).
    pub agency: String,
    pub level: Level,
    pub fee_vnd: u64,
    /// The legal processing time, in working days from a complete dossier's receipt.
    pub processing_days: u32,
    pub documents: Vec<Text>,
    /// The form, a JSON Schema (see the module documentation).
    pub form: Value,
    pub workflow: Vec<Step>,
    pub legal_basis: Vec<String>,
    /// What an approved dossier writes to a base register, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<crate::registration::Registration>,
    #[serde(skip)]
    fields: Vec<Field>,
}

/// The type of a form field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
}

/// One field of a procedure's form, as the schema declares it: what pages render and what
/// [`Procedure::check_form`] enforces.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub name: String,
    pub title: Text,
    pub kind: FieldType,
    pub required: bool,
    /// `format: date` (`YYYY-MM-DD`).
    pub date: bool,
    pub choices: Option<Vec<String>>,
    pub pattern: Option<String>,
    #[serde(skip)]
    regex: Option<Regex>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    /// Where the value is prefilled from ([`PREFILL_SOURCES`]).
    pub prefill: Option<String>,
}

/// One thing wrong with submitted form data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldProblem {
    /// The field's name (the form's key), or empty for the form as a whole.
    pub field: String,
    pub message: Text,
}

fn problem(field: &str, vi: String, en: String) -> FieldProblem {
    FieldProblem {
        field: field.to_owned(),
        message: Text { vi, en },
    }
}

impl Procedure {
    /// The form's fields in the schema's order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Fields with a prefill source, as `(field name, source)`.
    pub fn prefill_fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .filter_map(|f| f.prefill.as_deref().map(|p| (f.name.as_str(), p)))
    }

    /// The step a new dossier starts at.
    pub fn first_step(&self) -> &Step {
        // `validate` refuses an empty workflow, so there is always a first step.
        &self.workflow[0]
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.workflow.iter().find(|s| s.id == id)
    }

    /// The step after `id`, or `None` after the last (or for an unknown id).
    pub fn next_step(&self, id: &str) -> Option<&Step> {
        let i = self.workflow.iter().position(|s| s.id == id)?;
        self.workflow.get(i + 1)
    }

    /// Every problem of `data` against the form: unknown fields, missing required ones
    /// (an empty string is missing), wrong types, dates, choices, patterns, lengths and
    /// ranges. Empty when the data is valid.
    pub fn check_form(&self, data: &Value) -> Vec<FieldProblem> {
        let Some(object) = data.as_object() else {
            return vec![problem(
                "",
                "Dữ liệu biểu mẫu phải là một đối tượng JSON".into(),
                "Form data must be a JSON object".into(),
            )];
        };
        let mut problems = Vec::new();
        for key in object.keys() {
            if !self.fields.iter().any(|f| &f.name == key) {
                problems.push(problem(
                    key,
                    format!("Trường không có trong biểu mẫu: {key}"),
                    format!("Not a field of this form: {key}"),
                ));
            }
        }
        for f in &self.fields {
            let value = object.get(&f.name);
            let missing = match value {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                Some(_) => false,
            };
            if missing {
                if f.required {
                    problems.push(problem(
                        &f.name,
                        format!("Nhập {}", f.title.vi),
                        format!("Enter {}", f.title.en),
                    ));
                }
                continue;
            }
            if let Some(v) = value {
                problems.extend(f.check(v));
            }
        }
        problems
    }

    /// [`check_form`](Self::check_form) as a coded error (`XALO-PORTAL-003`) naming every
    /// problem, for JSON clients.
    pub fn validate_form(&self, data: &Value) -> Result<(), Error> {
        let problems = self.check_form(data);
        if problems.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = problems
            .iter()
            .map(|p| {
                if p.field.is_empty() {
                    p.message.en.clone()
                } else {
                    format!("{}: {}", p.field, p.message.en)
                }
            })
            .collect();
        Err(Error::new(
            ErrorCode::PortalFormInvalid,
            format!("procedure {}: {}", self.code, list.join("; ")),
        ))
    }

    /// Turn an HTML form's strings into typed form data: empty values are left out,
    /// integers and numbers parsed (a value that does not parse stays a string, so
    /// [`check_form`](Self::check_form) names it), checkboxes (`on`, `true`) become
    /// booleans. Keys that are not fields (`csrf_token`) are dropped.
    pub fn form_from_strings<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Value {
        let mut out = serde_json::Map::new();
        for (key, raw) in pairs {
            let Some(f) = self.fields.iter().find(|f| f.name == key) else {
                continue;
            };
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let v = match f.kind {
                FieldType::String => Value::String(raw.to_owned()),
                FieldType::Integer => raw
                    .replace(['.', ',', ' '], "")
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::String(raw.to_owned())),
                FieldType::Number => raw
                    .replace(',', ".")
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(raw.to_owned())),
                FieldType::Boolean => Value::Bool(matches!(raw, "on" | "true" | "1")),
            };
            out.insert(f.name.clone(), v);
        }
        Value::Object(out)
    }
}

impl Field {
    fn check(&self, v: &Value) -> Vec<FieldProblem> {
        let t = &self.title;
        let mut out = Vec::new();
        let mut bad = |vi: String, en: String| out.push(problem(&self.name, vi, en));
        match self.kind {
            FieldType::String => {
                let Some(s) = v.as_str() else {
                    bad(
                        format!("{} phải là văn bản", t.vi),
                        format!("{} must be text", t.en),
                    );
                    return out;
                };
                let chars = s.chars().count() as u64;
                if let Some(max) = self.max_length
                    && chars > max
                {
                    bad(
                        format!("{} không được dài quá {max} ký tự", t.vi),
                        format!("{} must be at most {max} characters", t.en),
                    );
                }
                if let Some(min) = self.min_length
                    && chars < min
                {
                    bad(
                        format!("{} phải có ít nhất {min} ký tự", t.vi),
                        format!("{} must be at least {min} characters", t.en),
                    );
                }
                if self.date && !is_date(s) {
                    bad(
                        format!("{} phải là ngày hợp lệ dạng NNNN-TT-NN", t.vi),
                        format!("{} must be a real date as YYYY-MM-DD", t.en),
                    );
                }
                if let Some(choices) = &self.choices
                    && !choices.iter().any(|c| c == s)
                {
                    bad(
                        format!("Chọn {} trong danh sách", t.vi),
                        format!("Choose {} from the list", t.en),
                    );
                }
                if let Some(re) = &self.regex
                    && !re.is_match(s)
                {
                    bad(
                        format!("{} không đúng định dạng", t.vi),
                        format!("{} is not in the right format", t.en),
                    );
                }
            }
            FieldType::Integer | FieldType::Number => {
                let n = match (self.kind, v) {
                    (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
                        n.as_f64()
                    }
                    (FieldType::Number, Value::Number(n)) => n.as_f64(),
                    _ => None,
                };
                let Some(n) = n else {
                    let (vi, en) = if self.kind == FieldType::Integer {
                        ("số nguyên", "a whole number")
                    } else {
                        ("số", "a number")
                    };
                    bad(
                        format!("{} phải là {vi}", t.vi),
                        format!("{} must be {en}", t.en),
                    );
                    return out;
                };
                if let Some(min) = self.minimum
                    && n < min
                {
                    bad(
                        format!("{} phải từ {min} trở lên", t.vi),
                        format!("{} must be {min} or more", t.en),
                    );
                }
                if let Some(max) = self.maximum
                    && n > max
                {
                    bad(
                        format!("{} không được lớn hơn {max}", t.vi),
                        format!("{} must be {max} or less", t.en),
                    );
                }
            }
            FieldType::Boolean => {
                if !v.is_boolean() {
                    bad(
                        format!("{} phải là có hoặc không", t.vi),
                        format!("{} must be yes or no", t.en),
                    );
                }
            }
        }
        out
    }
}

fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

/// Fold text for search: lower case, Vietnamese diacritics removed (also when typed as
/// combining marks), `đ` → `d`, anything but letters and digits a space.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if ('\u{300}'..='\u{36f}').contains(&c) {
            continue;
        }
        let base = match c {
            'à' | 'á' | 'ả' | 'ã' | 'ạ' | 'ă' | 'ằ' | 'ắ' | 'ẳ' | 'ẵ' | 'ặ' | 'â' | 'ầ' | 'ấ'
            | 'ẩ' | 'ẫ' | 'ậ' => 'a',
            'è' | 'é' | 'ẻ' | 'ẽ' | 'ẹ' | 'ê' | 'ề' | 'ế' | 'ể' | 'ễ' | 'ệ' => {
                'e'
            }
            'ì' | 'í' | 'ỉ' | 'ĩ' | 'ị' => 'i',
            'ò' | 'ó' | 'ỏ' | 'õ' | 'ọ' | 'ô' | 'ồ' | 'ố' | 'ổ' | 'ỗ' | 'ộ' | 'ơ' | 'ờ' | 'ớ'
            | 'ở' | 'ỡ' | 'ợ' => 'o',
            'ù' | 'ú' | 'ủ' | 'ũ' | 'ụ' | 'ư' | 'ừ' | 'ứ' | 'ử' | 'ữ' | 'ự' => {
                'u'
            }
            'ỳ' | 'ý' | 'ỷ' | 'ỹ' | 'ỵ' => 'y',
            'đ' => 'd',
            c if c.is_alphanumeric() || c == '.' => c,
            _ => ' ',
        };
        out.push(base);
    }
    out
}

fn words(folded: &str) -> Vec<String> {
    folded
        .split_whitespace()
        .map(|w| w.trim_matches('.').to_owned())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The searchable text of one procedure, folded once at load.
#[derive(Debug, Clone)]
struct Indexed {
    name_vi: String,
    name_vi_words: Vec<String>,
    name_en_words: Vec<String>,
    other_words: Vec<String>,
    code: String,
}

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit<'a> {
    pub score: u32,
    pub procedure: &'a Procedure,
}

/// The parsed and checked catalogue.
#[derive(Debug)]
pub struct Catalogue {
    agencies: Vec<Agency>,
    procedures: Vec<Procedure>,
    index: Vec<Indexed>,
}

/// The order of each form's properties in the text: JSON objects have no order once
/// parsed into a map, but a form has one.
#[derive(Deserialize)]
struct OrderFile {
    procedures: Vec<OrderProcedure>,
}

#[derive(Deserialize)]
struct OrderProcedure {
    form: OrderForm,
}

#[derive(Deserialize)]
struct OrderForm {
    #[serde(default)]
    properties: KeysInOrder,
}

#[derive(Default)]
struct KeysInOrder(Vec<String>);

impl<'de> Deserialize<'de> for KeysInOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = KeysInOrder;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<KeysInOrder, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(KeysInOrder(keys))
            }
        }
        d.deserialize_map(Keys)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    agencies: Vec<Agency>,
    procedures: Vec<Procedure>,
}

fn malformed(what: impl Into<String>) -> Error {
    Error::new(ErrorCode::CatalogueMalformed, what)
}

/// The embedded catalogue, parsed and checked on first use.
pub fn catalogue() -> Result<&'static Catalogue, Error> {
    static CELL: OnceLock<Result<Catalogue, Error>> = OnceLock::new();
    CELL.get_or_init(|| Catalogue::parse(DATA))
        .as_ref()
        .map_err(Clone::clone)
}

fn is_code(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 8 && b[0].is_ascii_digit() && b[1] == b'.' && b[2..].iter().all(u8::is_ascii_digit)
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Catalogue {
    /// Parse and check a catalogue document.
    pub fn parse(text: &str) -> Result<Catalogue, Error> {
        let file: File = serde_json::from_str(text)
            .map_err(|e| malformed(format!("procedure catalogue: {e}")))?;
        if file.version != 1 {
            return Err(malformed(format!(
                "procedure catalogue version {} (expected 1)",
                file.version
            )));
        }
        let mut agency_codes = HashSet::new();
        for a in &file.agencies {
            if a.code.is_empty()
                || a.code.len() > 32
                || !a
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.')
            {
                return Err(malformed(format!(
                    "agency code {:?}: expected 1 to 32 capital letters, digits or dots",
                    a.code
                )));
            }
            if a.name.vi.trim().is_empty() || a.name.en.trim().is_empty() {
                return Err(malformed(format!("agency {}: a name is empty", a.code)));
            }
            if let Some(m) = &a.member {
                m.parse::<xalo_core::MemberId>()
                    .map_err(|e| malformed(format!("agency {}: member {m}: {e}", a.code)))?;
            }
            if !agency_codes.insert(a.code.clone()) {
                return Err(malformed(format!("agency {} is listed twice", a.code)));
            }
        }
        let orders: OrderFile = serde_json::from_str(text)
            .map_err(|e| malformed(format!("procedure catalogue: {e}")))?;
        let mut codes = HashSet::new();
        let mut procedures = Vec::with_capacity(file.procedures.len());
        for (mut p, order) in file.procedures.into_iter().zip(orders.procedures) {
            let at = |what: String| malformed(format!("procedure {}: {what}", p.code));
            if !is_code(&p.code) {
                return Err(at("the code is not in the form 1.001193".into()));
            }
            if !codes.insert(p.code.clone()) {
                return Err(at("the code is used twice".into()));
            }
            for (what, t) in [("name", &p.name), ("sector", &p.sector)] {
                if t.vi.trim().is_empty() || t.en.trim().is_empty() {
                    return Err(at(format!("the {what} is empty in a language")));
                }
            }
            if !agency_codes.contains(&p.agency) {
                return Err(at(format!("unknown agency {}", p.agency)));
            }
            if p.documents.is_empty() || p.legal_basis.is_empty() {
                return Err(at("no required documents or no legal basis".into()));
            }
            check_workflow(&p, &agency_codes).map_err(at)?;
            p.fields = parse_form(&p.form, &order.form.properties.0).map_err(at)?;
            if let Some(r) = &p.registration {
                r.check(&p).map_err(at)?;
            }
            procedures.push(p);
        }
        let index = procedures
            .iter()
            .map(|p| {
                let agency = file.agencies.iter().find(|a| a.code == p.agency);
                let mut other = format!("{} {}", fold(&p.sector.vi), fold(&p.sector.en));
                if let Some(a) = agency {
                    other.push_str(&format!(
                        " {} {} {}",
                        fold(&a.code),
                        fold(&a.name.vi),
                        fold(&a.name.en)
                    ));
                }
                let name_vi = fold(&p.name.vi);
                Indexed {
                    name_vi_words: words(&name_vi),
                    name_vi: words(&name_vi).join(" "),
                    name_en_words: words(&fold(&p.name.en)),
                    other_words: words(&other),
                    code: p.code.clone(),
                }
            })
            .collect();
        Ok(Catalogue {
            agencies: file.agencies,
            procedures,
            index,
        })
    }

    pub fn procedures(&self) -> &[Procedure] {
        &self.procedures
    }

    pub fn agencies(&self) -> &[Agency] {
        &self.agencies
    }

    pub fn get(&self, code: &str) -> Option<&Procedure> {
        self.procedures.iter().find(|p| p.code == code)
    }

    /// The procedure, or `XALO-CATALOGUE-002`.
    pub fn require(&self, code: &str) -> Result<&Procedure, Error> {
        self.get(code).ok_or_else(|| {
            Error::new(
                ErrorCode::CatalogueUnknownProcedure,
                format!("no procedure {code:?} in the catalogue"),
            )
        })
    }

    pub fn agency(&self, code: &str) -> Option<&Agency> {
        self.agencies.iter().find(|a| a.code == code)
    }

    /// The agency's name in `lang`, or its code if unknown.
    pub fn agency_name(&self, code: &str, lang: Lang) -> String {
        self.agency(code)
            .map(|a| a.name.get(lang).to_owned())
            .unwrap_or_else(|| code.to_owned())
    }

    /// Procedures matching every word of `query` (case and diacritics ignored), best
    /// first. An empty query matches nothing; a query longer than [`MAX_QUERY_CHARS`] is
    /// `XALO-CATALOGUE-003`.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Hit<'_>>, Error> {
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::new(
                ErrorCode::CatalogueQuery,
                format!("the search is longer than {MAX_QUERY_CHARS} characters"),
            ));
        }
        let folded = fold(query);
        let terms = words(&folded);
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let phrase = terms.join(" ");
        let mut hits: Vec<Hit<'_>> = self
            .procedures
            .iter()
            .zip(&self.index)
            .filter_map(|(p, ix)| {
                score(ix, &terms, &phrase).map(|score| Hit {
                    score,
                    procedure: p,
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then(
                    a.procedure
                        .name
                        .vi
                        .chars()
                        .count()
                        .cmp(&b.procedure.name.vi.chars().count()),
                )
                .then(a.procedure.code.cmp(&b.procedure.code))
        });
        hits.truncate(limit);
        Ok(hits)
    }
}

/// A word of the query matches a word of the text that starts with it.
fn word_match(text: &[String], term: &str) -> bool {
    text.iter().any(|w| w.starts_with(term))
}

fn score(ix: &Indexed, terms: &[String], phrase: &str) -> Option<u32> {
    let mut score = 0u32;
    if terms.len() == 1 && ix.code == terms[0] {
        return Some(10_000);
    }
    for t in terms {
        let mut s = 0;
        if ix.code.starts_with(t.as_str()) && t.contains('.') {
            s += 50;
        }
        if word_match(&ix.name_vi_words, t) {
            s += 10;
        }
        if word_match(&ix.name_en_words, t) {
            s += 6;
        }
        if word_match(&ix.other_words, t) {
            s += 2;
        }
        if s == 0 {
            return None;
        }
        score += s;
    }
    // The whole phrase in the Vietnamese name, on word boundaries, ranks first.
    let padded = format!(" {} ", ix.name_vi);
    if padded.contains(&format!(" {phrase} ")) {
        score += 100;
        if ix.name_vi == phrase || ix.name_vi.ends_with(&format!(" {phrase}")) {
            score += 50;
        }
    }
    Some(score)
}

fn check_workflow(p: &Procedure, agencies: &HashSet<String>) -> Result<(), String> {
    let (Some(first), Some(last)) = (p.workflow.first(), p.workflow.last()) else {
        return Err("the workflow has no steps".into());
    };
    if first.role != StepRole::Receiver || last.role != StepRole::Approver {
        return Err("the workflow must start with a receiver and end with an approver".into());
    }
    let mut ids = HashSet::new();
    for s in &p.workflow {
        if !is_name(&s.id) || s.id.len() > 40 || !ids.insert(s.id.as_str()) {
            return Err(format!("step id {:?} is malformed or repeated", s.id));
        }
        if !agencies.contains(&s.agency) {
            return Err(format!("step {}: unknown agency {}", s.id, s.agency));
        }
        if s.name.vi.trim().is_empty() || s.name.en.trim().is_empty() {
            return Err(format!("step {}: a name is empty", s.id));
        }
    }
    let total: u32 = p.workflow.iter().map(|s| s.days).sum();
    if total != p.processing_days {
        return Err(format!(
            "the steps take {total} working days, the procedure {}",
            p.processing_days
        ));
    }
    if first.agency != p.agency {
        return Err("the first step is not at the receiving agency".into());
    }
    Ok(())
}

const FIELD_KEYWORDS: &[&str] = &[
    "type",
    "title",
    "x-title-en",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "x-prefill",
];

fn parse_form(form: &Value, order: &[String]) -> Result<Vec<Field>, String> {
    let obj = form.as_object().ok_or("the form is not a JSON object")?;
    for key in obj.keys() {
        if ![
            "$schema",
            "type",
            "additionalProperties",
            "required",
            "properties",
        ]
        .contains(&key.as_str())
        {
            return Err(format!("the form uses the unsupported keyword {key}"));
        }
    }
    if obj.get("type") != Some(&Value::from("object"))
        || obj.get("additionalProperties") != Some(&Value::Bool(false))
    {
        return Err("the form must be an object with additionalProperties false".into());
    }
    let props = obj
        .get("properties")
        .and_then(Value::as_object)
        .filter(|p| !p.is_empty())
        .ok_or("the form has no properties")?;
    let required: Vec<&str> = match obj.get("required") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().ok_or("required lists a non-string"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("required is not a list".into()),
    };
    for r in &required {
        if !props.contains_key(*r) {
            return Err(format!("required names an unknown field {r}"));
        }
    }
    let mut fields = Vec::with_capacity(props.len());
    for name in order {
        let Some(spec) = props.get(name) else {
            continue;
        };
        let at = |what: &str| format!("field {name}: {what}");
        if !is_name(name) || name.len() > 64 {
            return Err(at("the name is not snake_case"));
        }
        let spec = spec.as_object().ok_or_else(|| at("not an object"))?;
        if let Some(k) = spec.keys().find(|k| !FIELD_KEYWORDS.contains(&k.as_str())) {
            return Err(at(&format!("unsupported keyword {k}")));
        }
        let text = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_owned);
        let kind = match spec.get("type").and_then(Value::as_str) {
            Some("string") => FieldType::String,
            Some("integer") => FieldType::Integer,
            Some("number") => FieldType::Number,
            Some("boolean") => FieldType::Boolean,
            _ => return Err(at("type must be string, integer, number or boolean")),
        };
        let title = match (text("title"), text("x-title-en")) {
            (Some(vi), Some(en)) if !vi.trim().is_empty() && !en.trim().is_empty() => {
                Text { vi, en }
            }
            _ => return Err(at("title and x-title-en are required")),
        };
        let date = match text("format").as_deref() {
            None => false,
            Some("date") => true,
            Some(other) => return Err(at(&format!("unsupported format {other}"))),
        };
        let string_only = ["format", "enum", "pattern", "minLength", "maxLength"];
        let number_only = ["minimum", "maximum"];
        if kind != FieldType::String && string_only.iter().any(|k| spec.contains_key(*k)) {
            return Err(at("a string keyword on a non-string field"));
        }
        if !matches!(kind, FieldType::Integer | FieldType::Number)
            && number_only.iter().any(|k| spec.contains_key(*k))
        {
            return Err(at("a number keyword on a non-number field"));
        }
        let choices = match spec.get("enum") {
            None => None,
            Some(Value::Array(a)) if !a.is_empty() => Some(
                a.iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| at("enum lists a non-string"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Some(_) => return Err(at("enum must be a non-empty list")),
        };
        let pattern = text("pattern");
        let regex = match &pattern {
            None => None,
            Some(p) => Some(Regex::new(p).map_err(|e| at(&format!("pattern {p}: {e}")))?),
        };
        let uint = |k: &str| -> Result<Option<u64>, String> {
            match spec.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| at(&format!("{k} is not a whole number"))),
            }
        };
        let num = |k: &str| -> Result<Option<f64>, String> {
            match spec.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| at(&format!("{k} is not a number"))),
            }
        };
        let prefill = match spec.get("x-prefill") {
            None => None,
            Some(Value::String(s)) if PREFILL_SOURCES.contains(&s.as_str()) => Some(s.clone()),
            Some(v) => return Err(at(&format!("unknown prefill source {v}"))),
        };
        // A string without any bound would accept megabytes into a dossier.
        let max_length = uint("maxLength")?;
        if kind == FieldType::String
            && max_length.is_none()
            && choices.is_none()
            && pattern.is_none()
            && !date
        {
            return Err(at("a free-text field needs maxLength"));
        }
        fields.push(Field {
            name: name.clone(),
            title,
            kind,
            required: required.contains(&name.as_str()),
            date,
            choices,
            pattern,
            regex,
            min_length: uint("minLength")?,
            max_length,
            minimum: num("minimum")?,
            maximum: num("maximum")?,
            prefill,
        });
    }
    if fields.len() != props.len() {
        return Err("a property is listed twice".into());
    }
    Ok(fields)
}

// ---------------------------------------------------------------------------------------
// Pages and JSON.

xalo_web::catalogue! {
    /// Texts of the catalogue pages.
    pub struct CatalogueText {
        list_title: "Thủ tục hành chính" / "Administrative procedures",
        search_label: "Tìm thủ tục" / "Find a procedure",
        search_hint: "Tên, mã thủ tục hoặc cơ quan, có dấu hoặc không dấu" / "Name, procedure code or agency, with or without Vietnamese accents",
        search_button: "Tìm kiếm" / "Search",
        results: "kết quả" / "results",
        no_results: "Không tìm thấy thủ tục phù hợp. Thử từ khóa khác." / "No procedure matches. Try other words.",
        all_procedures: "Tất cả thủ tục" / "All procedures",
        code: "Mã thủ tục" / "Procedure code",
        agency: "Cơ quan thực hiện" / "Responsible agency",
        sector: "Lĩnh vực" / "Sector",
        level: "Mức độ dịch vụ công trực tuyến" / "Level of online service",
        level_full: "Toàn trình" / "Full process online",
        level_partial: "Một phần" / "Partly online",
        level_full_hint: "Nộp hồ sơ, xử lý và nhận kết quả hoàn toàn trực tuyến (Nghị định 42/2022/NĐ-CP)." / "Apply, be processed and receive the result entirely online (Decree 42/2022/NĐ-CP).",
        level_partial_hint: "Nộp hồ sơ trực tuyến; một bước cần đến cơ quan (Nghị định 42/2022/NĐ-CP)." / "Apply online; one step needs a visit to the agency (Decree 42/2022/NĐ-CP).",
        fee: "Phí, lệ phí" / "Fee",
        free: "Miễn phí" / "Free of charge",
        processing: "Thời hạn giải quyết" / "Processing time",
        working_days: "ngày làm việc" / "working days",
        same_day: "Trong ngày" / "The same day",
        documents: "Thành phần hồ sơ" / "Required documents",
        form: "Thông tin cần khai" / "Information to give",
        field: "Thông tin" / "Information",
        required: "Bắt buộc" / "Required",
        optional: "Không bắt buộc" / "Optional",
        prefilled: "Điền sẵn từ cơ sở dữ liệu quốc gia" / "Prefilled from the national registers",
        workflow: "Quy trình xử lý" / "How it is processed",
        step_role_receiver: "Tiếp nhận" / "Reception",
        step_role_processor: "Xử lý" / "Processing",
        step_role_approver: "Phê duyệt" / "Approval",
        legal_basis: "Căn cứ pháp lý" / "Legal basis",
        apply: "Nộp hồ sơ trực tuyến" / "Apply online",
        back: "Quay lại danh sách thủ tục" / "Back to the list of procedures",
        not_found: "Không có thủ tục này trong danh mục." / "There is no such procedure in the catalogue.",
    }
}

/// Where a citizen starts an application for a procedure (the dossier pages).
pub fn apply_href(code: &str) -> String {
    format!("/dossiers/new?procedure={code}")
}

/// A fee as the language writes amounts: `1.200.000 ₫`, `1,200,000 VND`.
pub fn format_vnd(amount: u64, lang: Lang) -> String {
    let digits = amount.to_string();
    let sep = match lang {
        Lang::Vi => '.',
        Lang::En => ',',
    };
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    match lang {
        Lang::Vi => format!("{out} ₫"),
        Lang::En => format!("{out} VND"),
    }
}

struct Row {
    href: String,
    code: String,
    name: String,
    agency: String,
    level: &'static str,
    fee: String,
    days: String,
}

#[derive(Template)]
#[template(path = "catalogue_list.html")]
struct ListTemplate<'a> {
    t: &'static CatalogueText,
    query: &'a str,
    searched: bool,
    rows: Vec<Row>,
}

struct FieldRow {
    title: String,
    required: bool,
    prefilled: bool,
}

struct StepRow {
    name: String,
    role: &'static str,
    agency: String,
    days: String,
}

#[derive(Template)]
#[template(path = "catalogue_detail.html")]
struct DetailTemplate<'a> {
    t: &'static CatalogueText,
    p: &'a Procedure,
    agency: String,
    sector: &'a str,
    level: &'static str,
    level_hint: &'static str,
    fee: String,
    days: String,
    documents: Vec<&'a str>,
    fields: Vec<FieldRow>,
    steps: Vec<StepRow>,
    apply: String,
}

fn days_text(t: &CatalogueText, days: u32) -> String {
    if days == 0 {
        t.same_day.to_owned()
    } else {
        format!("{days} {}", t.working_days)
    }
}

fn fee_text(t: &CatalogueText, fee: u64, lang: Lang) -> String {
    if fee == 0 {
        t.free.to_owned()
    } else {
        format_vnd(fee, lang)
    }
}

fn level_text(t: &CatalogueText, level: Level) -> &'static str {
    match level {
        Level::Full => t.level_full,
        Level::Partial => t.level_partial,
    }
}

/// Query of the list page and the JSON search.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    pub q: String,
}

/// The catalogue's pages and JSON, public (no sign-in):
/// `GET /procedures?q=` (list with a search form), `GET /procedures/{code}` (detail),
/// `GET /api/procedures?q=` and `GET /api/procedures/{code}` (JSON). The pages need the
/// session middleware of the page kit (for the language).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/procedures", get(list_page))
        .route("/procedures/{code}", get(detail_page))
        .route("/api/procedures", get(list_json))
        .route("/api/procedures/{code}", get(detail_json))
}

async fn list_page(
    Extension(session): Extension<Session>,
    uri: Uri,
    Query(q): Query<SearchQuery>,
) -> Result<Html<String>, Error> {
    let lang = session.lang;
    let t = CatalogueText::get(lang);
    let cat = catalogue()?;
    let query = q.q.trim();
    let searched = !query.is_empty();
    let procedures: Vec<&Procedure> = if searched {
        cat.search(query, 200)?
            .into_iter()
            .map(|h| h.procedure)
            .collect()
    } else {
        let mut all: Vec<&Procedure> = cat.procedures().iter().collect();
        all.sort_by(|a, b| {
            a.sector
                .get(lang)
                .cmp(b.sector.get(lang))
                .then(a.code.cmp(&b.code))
        });
        all
    };
    let rows = procedures
        .into_iter()
        .map(|p| Row {
            href: format!("/procedures/{}", p.code),
            code: p.code.clone(),
            name: p.name.get(lang).to_owned(),
            agency: cat.agency_name(&p.agency, lang),
            level: level_text(t, p.level),
            fee: fee_text(t, p.fee_vnd, lang),
            days: days_text(t, p.processing_days),
        })
        .collect();
    let body = ListTemplate {
        t,
        query,
        searched,
        rows,
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    xalo_web::html(&Page {
        lang,
        title: t.list_title,
        uri: &uri,
        body,
    })
}

async fn detail_page(
    Extension(session): Extension<Session>,
    uri: Uri,
    Path(code): Path<String>,
) -> Result<Response, Error> {
    let lang = session.lang;
    let t = CatalogueText::get(lang);
    let cat = catalogue()?;
    let p = cat.require(&code)?;
    let body = DetailTemplate {
        t,
        p,
        agency: cat.agency_name(&p.agency, lang),
        sector: p.sector.get(lang),
        level: level_text(t, p.level),
        level_hint: match p.level {
            Level::Full => t.level_full_hint,
            Level::Partial => t.level_partial_hint,
        },
        fee: fee_text(t, p.fee_vnd, lang),
        days: days_text(t, p.processing_days),
        documents: p.documents.iter().map(|d| d.get(lang)).collect(),
        fields: p
            .fields()
            .iter()
            .map(|f| FieldRow {
                title: f.title.get(lang).to_owned(),
                required: f.required,
                prefilled: f.prefill.is_some(),
            })
            .collect(),
        steps: p
            .workflow
            .iter()
            .map(|s| StepRow {
                name: s.name.get(lang).to_owned(),
                role: match s.role {
                    StepRole::Receiver => t.step_role_receiver,
                    StepRole::Processor => t.step_role_processor,
                    StepRole::Approver => t.step_role_approver,
                },
                agency: cat.agency_name(&s.agency, lang),
                days: days_text(t, s.days),
            })
            .collect(),
        apply: apply_href(&p.code),
    }
    .render()
    .map_err(xalo_web::page::template_error)?;
    Ok(xalo_web::html(&Page {
        lang,
        title: p.name.get(lang),
        uri: &uri,
        body,
    })?
    .into_response())
}

/// A procedure in the JSON answers, with its agency spelled out.
#[derive(Serialize)]
struct ProcedureJson<'a> {
    #[serde(flatten)]
    procedure: &'a Procedure,
    agency_detail: Option<&'a Agency>,
}

#[derive(Serialize)]
struct ListJson<'a> {
    count: usize,
    procedures: Vec<ProcedureSummary<'a>>,
}

#[derive(Serialize)]
struct ProcedureSummary<'a> {
    code: &'a str,
    name: &'a Text,
    sector: &'a Text,
    agency: &'a str,
    level: Level,
    fee_vnd: u64,
    processing_days: u32,
    score: Option<u32>,
}

fn summary(p: &Procedure, score: Option<u32>) -> ProcedureSummary<'_> {
    ProcedureSummary {
        code: &p.code,
        name: &p.name,
        sector: &p.sector,
        agency: &p.agency,
        level: p.level,
        fee_vnd: p.fee_vnd,
        processing_days: p.processing_days,
        score,
    }
}

async fn list_json(Query(q): Query<SearchQuery>) -> Result<Response, Error> {
    let cat = catalogue()?;
    let procedures: Vec<ProcedureSummary<'_>> = if q.q.trim().is_empty() {
        cat.procedures().iter().map(|p| summary(p, None)).collect()
    } else {
        cat.search(&q.q, 500)?
            .into_iter()
            .map(|h| summary(h.procedure, Some(h.score)))
            .collect()
    };
    Ok(Json(ListJson {
        count: procedures.len(),
        procedures,
    })
    .into_response())
}

async fn detail_json(Path(code): Path<String>) -> Result<Response, Error> {
    let cat = catalogue()?;
    let p = cat.require(&code)?;
    Ok(Json(ProcedureJson {
        procedure: p,
        agency_detail: cat.agency(&p.agency),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_embedded_catalogue_is_valid_and_large() {
        let cat = catalogue().unwrap();
        assert!(cat.procedures().len() >= 100, "{}", cat.procedures().len());
        // Every sector the issue names is there.
        for sector in [
            "Hộ tịch",
            "Lý lịch tư pháp",
            "Đăng ký, quản lý cư trú",
            "Thành lập và hoạt động của doanh nghiệp",
            "Bảo hiểm xã hội",
            "Thuế",
            "Hoạt động xây dựng",
            "Đường bộ",
        ] {
            assert!(
                cat.procedures().iter().any(|p| p.sector.vi == sector),
                "{sector}"
            );
        }
        let birth = cat.require("1.001193").unwrap();
        assert_eq!(birth.name.vi, "Đăng ký khai sinh");
        assert_eq!(birth.level, Level::Full);
        assert_eq!(birth.first_step().id, "receive");
        // Fields keep the schema's order, not the alphabet's.
        assert_eq!(birth.fields()[0].name, "applicant_personal_code");
        assert_eq!(birth.fields()[5].name, "child_family_name");
        assert_eq!(birth.next_step("receive").unwrap().id, "process");
        assert!(birth.next_step("approve").is_none());
        let prefill: Vec<_> = birth.prefill_fields().collect();
        assert!(prefill.contains(&("applicant_personal_code", "person.personal_code")));
        assert!(prefill.contains(&("other_parent_full_name", "spouse.full_name")));
        // Agencies of the demo nation carry their exchange member.
        assert_eq!(
            cat.agency("BCA").unwrap().member.as_deref(),
            Some("VN/GOV/000001")
        );
        assert_eq!(
            cat.require("9.999999").unwrap_err().code,
            ErrorCode::CatalogueUnknownProcedure
        );
    }

    #[test]
    fn folding_ignores_case_and_diacritics() {
        assert_eq!(fold("Đăng ký khai sinh"), "dang ky khai sinh");
        assert_eq!(fold("ĐĂNG KÝ KHAI SINH"), "dang ky khai sinh");
        assert_eq!(fold("Phiếu lý lịch tư pháp"), "phieu ly lich tu phap");
        // Decomposed input (combining marks) folds the same.
        assert_eq!(fold("Đa\u{306}ng ky\u{301}"), "dang ky");
        assert_eq!(fold("thường-trú"), "thuong tru");
    }

    #[test]
    fn search_finds_birth_registration_without_diacritics() {
        let cat = catalogue().unwrap();
        for q in [
            "khai sinh",
            "KHAI SINH",
            "Khai Sinh",
            "đăng ký khai sinh",
            "dang ky khai sinh",
        ] {
            let hits = cat.search(q, 10).unwrap();
            assert_eq!(
                hits[0].procedure.code,
                "1.001193",
                "{q}: {:?}",
                hits.iter()
                    .map(|h| &h.procedure.name.vi)
                    .collect::<Vec<_>>()
            );
            assert!(
                hits.iter()
                    .all(|h| fold(&h.procedure.name.vi).contains("khai sinh"))
            );
        }
        // English, codes, agencies and prefixes.
        assert_eq!(
            cat.search("birth registration", 1).unwrap()[0]
                .procedure
                .code,
            "1.001193"
        );
        assert_eq!(
            cat.search("1.001193", 5).unwrap()[0].procedure.code,
            "1.001193"
        );
        let hits = cat.search("ly lich tu phap", 10).unwrap();
        assert!(!hits.is_empty());
        assert!(
            hits.iter()
                .all(|h| h.procedure.sector.vi == "Lý lịch tư pháp")
        );
        let hits = cat.search("thuong tru", 5).unwrap();
        assert_eq!(hits[0].procedure.name.vi, "Đăng ký thường trú");
        assert!(!cat.search("so tu phap quang ninh", 50).unwrap().is_empty());
        assert!(cat.search("   ", 5).unwrap().is_empty());
        assert!(cat.search("xyzzy", 5).unwrap().is_empty());
        let long = "a".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(
            cat.search(&long, 5).unwrap_err().code,
            ErrorCode::CatalogueQuery
        );
    }

    #[test]
    fn form_checks() {
        let cat = catalogue().unwrap();
        let birth = cat.require("1.001193").unwrap();
        let good = json!({
            "applicant_personal_code": "VN001203012345",
            "applicant_full_name": "Nguyễn Văn An",
            "applicant_birth_date": "1990-05-01",
            "applicant_residence": "Hạ Long, Quảng Ninh",
            "child_family_name": "Nguyễn",
            "child_given_name": "Bình",
            "child_birth_date": "2026-11-20",
            "child_gender": "nam",
            "child_birth_place": "Bệnh viện Bãi Cháy",
            "child_birth_place_unit": "06970",
            "applicant_relationship": "cha"
        });
        assert_eq!(birth.check_form(&good), vec![]);
        birth.validate_form(&good).unwrap();
        let mut bad = good.clone();
        bad["child_birth_date"] = json!("2026-02-30");
        bad["child_gender"] = json!("x");
        bad["applicant_personal_code"] = json!("12345");
        bad["surprise"] = json!(1);
        bad["child_given_name"] = json!("");
        let problems = birth.check_form(&bad);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "child_birth_date",
            "child_gender",
            "applicant_personal_code",
            "surprise",
            "child_given_name",
        ] {
            assert!(fields.contains(&f), "{f}: {problems:?}");
        }
        let err = birth.validate_form(&bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::PortalFormInvalid);
        assert!(err.message.contains("child_gender"), "{}", err.message);
        assert!(!birth.check_form(&json!([1])).is_empty());

        // Numbers from an HTML form.
        let tax = cat.require("1.007850").unwrap();
        let data = tax.form_from_strings([
            ("tax_year", "2025"),
            ("taxable_income_vnd", "120.000.000"),
            ("csrf_token", "x"),
            ("tax_code", ""),
        ]);
        assert_eq!(
            data,
            json!({"tax_year": 2025, "taxable_income_vnd": 120_000_000})
        );
        let data = tax.form_from_strings([("tax_year", "1900")]);
        assert!(tax.check_form(&data).iter().any(|p| p.field == "tax_year"));
        let data = tax.form_from_strings([("tax_year", "twenty")]);
        assert!(tax.check_form(&data).iter().any(|p| p.field == "tax_year"));
    }

    #[test]
    fn malformed_entries_are_coded_errors() {
        let text = DATA;
        let mut doc: Value = serde_json::from_str(text).unwrap();
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "code",
                Box::new(|d| d["procedures"][0]["code"] = json!("1001193")),
            ),
            (
                "agency",
                Box::new(|d| d["procedures"][0]["agency"] = json!("NOPE")),
            ),
            (
                "days",
                Box::new(|d| d["procedures"][0]["processing_days"] = json!(99)),
            ),
            (
                "prefill",
                Box::new(|d| {
                    d["procedures"][0]["form"]["properties"]["applicant_full_name"]["x-prefill"] =
                        json!("person.shoe_size")
                }),
            ),
            (
                "keyword",
                Box::new(|d| {
                    d["procedures"][0]["form"]["properties"]["applicant_full_name"]["oneOf"] =
                        json!([])
                }),
            ),
            (
                "pattern",
                Box::new(|d| {
                    d["procedures"][0]["form"]["properties"]["applicant_phone"]["pattern"] =
                        json!("([")
                }),
            ),
            (
                "duplicate",
                Box::new(|d| {
                    let first = d["procedures"][0].clone();
                    d["procedures"].as_array_mut().unwrap().push(first);
                }),
            ),
            (
                "unknown key",
                Box::new(|d| d["procedures"][0]["colour"] = json!("red")),
            ),
            (
                "workflow",
                Box::new(|d| d["procedures"][0]["workflow"] = json!([])),
            ),
        ];
        for (what, change) in cases {
            let mut d = doc.clone();
            change(&mut d);
            let err = Catalogue::parse(&d.to_string()).unwrap_err();
            assert_eq!(err.code, ErrorCode::CatalogueMalformed, "{what}: {err}");
            assert!(
                what == "unknown key" || err.message.contains("1.001193") || what == "duplicate",
                "{what}: {err}"
            );
        }
        doc["version"] = json!(2);
        assert!(Catalogue::parse(&doc.to_string()).is_err());
        assert!(Catalogue::parse("{").is_err());
    }

    #[test]
    fn amounts() {
        assert_eq!(format_vnd(1_200_000, Lang::Vi), "1.200.000 ₫");
        assert_eq!(format_vnd(75_000, Lang::En), "75,000 VND");
        assert_eq!(format_vnd(500, Lang::Vi), "500 ₫");
    }
}
