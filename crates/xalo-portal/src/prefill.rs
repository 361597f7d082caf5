//! Prefilling a procedure's form from the base registries, through the exchange.
//!
//! A procedure's form is a JSON Schema; a property that the registers can answer carries
//! `"x-prefill": "SOURCE.FIELD"`. The sources ([`SOURCES`]):
//!
//! | source | what | exchange call (population / business register) |
//! |---|---|---|
//! | `person` | the signed-in person | `persons/{code}` |
//! | `father`, `mother`, `spouse` | that person's parents and spouse, as the register links them | `persons/{their code}` |
//! | `household` | the people registered at the person's address | `persons/{code}/household` |
//! | `enterprise` | the active enterprise the person represents | `enterprises?representative={code}` |
//!
//! Fields of a person: `personal_code` (or `code`), `full_name`, `family_name`,
//! `middle_name`, `given_name`, `birth_date`, `gender` (`male`/`female`, or the form's
//! `nam`/`nu` when its `enum` says so), `birth_place` (the unit's name and province),
//! `nationality` (`Việt Nam` for `VN`), `residence_unit` (the unit's code),
//! `residence_address` (the full address as printed: street, unit, province),
//! `temporary_residence_unit`. Of the household: `size` and `members` (an array of
//! `{personal_code, full_name, birth_date}`). Of an enterprise: `tax_code` (or `code`),
//! `name`, `foreign_name`, `unit`, `address` (full, as printed), `legal_form`,
//! `charter_capital`, `business_lines`, `status`, `registered_on`.
//!
//! Every call carries the citizen as `X-Road-UserId` and the dossier's code as
//! `X-Road-Issue`, so the register's access records (and the data tracker) say which
//! dossier each read was for. Only the sources the form names are asked for. A failed call
//! is an error for the page to show; a record the register does not have (no father
//! recorded) leaves its fields empty and is listed in [`Prefilled::missing`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use xalo_core::{Error, ErrorCode, PersonalCode};

use xalo_registry::admin_unit::admin_units;

use crate::exchange::{CallError, Exchange, Register};

/// The sources a form may name, and their fields.
pub const SOURCES: &[(&str, &[&str])] = &[
    ("person", PERSON_FIELDS),
    ("father", PERSON_FIELDS),
    ("mother", PERSON_FIELDS),
    ("spouse", PERSON_FIELDS),
    ("household", &["size", "members"]),
    (
        "enterprise",
        &[
            "tax_code",
            "code",
            "name",
            "foreign_name",
            "unit",
            "address",
            "legal_form",
            "charter_capital",
            "business_lines",
            "status",
            "registered_on",
        ],
    ),
];

const PERSON_FIELDS: &[&str] = &[
    "personal_code",
    "code",
    "full_name",
    "family_name",
    "middle_name",
    "given_name",
    "birth_date",
    "gender",
    "birth_place",
    "nationality",
    "residence_unit",
    "residence_address",
    "temporary_residence_unit",
];

/// One property of the form to prefill: where it is (property names from the root) and
/// what fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: Vec<String>,
    pub source: String,
    pub field: String,
    /// The schema's `type` of the property, to convert to.
    pub kind: Option<String>,
    /// The schema's `enum`, if any: a value outside it is not filled in.
    pub choices: Option<Vec<Value>>,
}

/// The properties of `schema` marked `x-prefill`, in schema order. An unknown source or
/// field is an error (`XALO-PREFILL-003`): a catalogue mistake should fail loudly.
pub fn targets(schema: &Value) -> Result<Vec<Target>, Error> {
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<Target>) -> Result<(), Error> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (name, prop) in props {
        path.push(name.clone());
        if let Some(spec) = prop.get("x-prefill") {
            let spec = spec.as_str().unwrap_or_default();
            let (source, field) = parse_source(spec).ok_or_else(|| {
                Error::new(
                    ErrorCode::PrefillField,
                    format!(
                        "form field {}: x-prefill {spec:?} is not a known SOURCE.FIELD",
                        path.join(".")
                    ),
                )
            })?;
            out.push(Target {
                path: path.clone(),
                source: source.to_owned(),
                field: field.to_owned(),
                kind: prop.get("type").and_then(Value::as_str).map(str::to_owned),
                choices: prop.get("enum").and_then(Value::as_array).cloned(),
            });
        }
        walk(prop, path, out)?;
        path.pop();
    }
    Ok(())
}

/// `"mother.personal_code"` → `("mother", "personal_code")`, if both are known.
pub fn parse_source(spec: &str) -> Option<(&str, &str)> {
    let (source, field) = spec.split_once('.')?;
    let (_, fields) = SOURCES.iter().find(|(s, _)| *s == source)?;
    fields.contains(&field).then_some((source, field))
}

/// The result of a prefill.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Prefilled {
    /// Form data: the prefilled properties only, nested as the schema nests them.
    pub form: Value,
    /// Paths (`a.b`) of the properties filled.
    pub filled: Vec<String>,
    /// Paths of properties left empty because the register has no such record, with the
    /// source that was missing (`father`).
    pub missing: Vec<(String, String)>,
}

fn prefill_error(e: CallError) -> Error {
    e.into_error(ErrorCode::PrefillUpstream, ErrorCode::PrefillRefused)
}

/// Prefill the form of `schema` for `person`, for the dossier `dossier_code` (the purpose
/// of every call), reading the registers through `exchange`.
pub async fn prefill(
    exchange: &Exchange,
    schema: &Value,
    person: &PersonalCode,
    dossier_code: &str,
) -> Result<Prefilled, Error> {
    let targets = targets(schema)?;
    if targets.is_empty() {
        return Ok(Prefilled {
            form: Value::Object(Map::new()),
            ..Prefilled::default()
        });
    }
    let wanted = |s: &str| targets.iter().any(|t| t.source == s);
    let mut sources: BTreeMap<&str, Option<Value>> = BTreeMap::new();
    let me: Option<Value> = if ["person", "father", "mother", "spouse"]
        .iter()
        .any(|s| wanted(s))
    {
        Some(
            exchange
                .get(
                    Register::Population,
                    "persons",
                    &format!("/{person}"),
                    person,
                    dossier_code,
                )
                .await
                .map_err(|e| match e {
                    // The signed-in person must be in the register: anything else is wrong.
                    CallError::NotFound(m) => Error::new(
                        ErrorCode::PrefillRefused,
                        format!("the population register has no record of you: {m}"),
                    ),
                    e => prefill_error(e),
                })?,
        )
    } else {
        None
    };
    // The relatives, the household and the enterprise do not depend on each other: they
    // are asked for at once, so a prefill costs two round trips through the exchange.
    let relative = |name: &'static str| {
        let code = me
            .as_ref()
            .filter(|_| wanted(name))
            .and_then(|p| p.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned);
        async move {
            let Some(code) = code else {
                return Ok(None);
            };
            match exchange
                .get::<Value>(
                    Register::Population,
                    "persons",
                    &format!("/{code}"),
                    person,
                    dossier_code,
                )
                .await
            {
                Ok(v) => Ok(Some(v)),
                Err(CallError::NotFound(_)) => Ok(None),
                Err(e) => Err(prefill_error(e)),
            }
        }
    };
    let household = async {
        if !wanted("household") {
            return Ok(None);
        }
        let members: Vec<Value> = exchange
            .get(
                Register::Population,
                "persons",
                &format!("/{person}/household"),
                person,
                dossier_code,
            )
            .await
            .map_err(prefill_error)?;
        let list: Vec<Value> = members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "personal_code": m.get("code").cloned().unwrap_or_default(),
                    "full_name": full_name(m),
                    "birth_date": m.get("birth_date").cloned().unwrap_or_default(),
                })
            })
            .collect();
        Ok::<_, Error>(Some(
            serde_json::json!({ "size": list.len(), "members": list }),
        ))
    };
    let enterprise = async {
        if !wanted("enterprise") {
            return Ok(None);
        }
        let found: Vec<Value> = exchange
            .get(
                Register::Business,
                "enterprises",
                &format!("?representative={person}"),
                person,
                dossier_code,
            )
            .await
            .map_err(prefill_error)?;
        Ok::<_, Error>(
            found
                .into_iter()
                .find(|e| e.get("status").and_then(Value::as_str) == Some("active")),
        )
    };
    let (father, mother, spouse, household, enterprise) = tokio::join!(
        relative("father"),
        relative("mother"),
        relative("spouse"),
        household,
        enterprise
    );
    sources.insert("father", father?);
    sources.insert("mother", mother?);
    sources.insert("spouse", spouse?);
    sources.insert("household", household?);
    sources.insert("enterprise", enterprise?);
    sources.insert("person", me);

    let mut out = Prefilled {
        form: Value::Object(Map::new()),
        ..Prefilled::default()
    };
    for t in &targets {
        let path = t.path.join(".");
        let record = sources.get(t.source.as_str()).and_then(Option::as_ref);
        let value = record
            .and_then(|r| field_of(r, &t.source, &t.field))
            .map(|v| convert(v, t.kind.as_deref()))
            .and_then(|v| fit_choices(v, t.choices.as_deref()));
        match value {
            Some(v) => {
                set(&mut out.form, &t.path, v);
                out.filled.push(path);
            }
            None => out.missing.push((path, t.source.clone())),
        }
    }
    Ok(out)
}

fn full_name(p: &Value) -> String {
    ["family_name", "middle_name", "given_name"]
        .iter()
        .filter_map(|k| p.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// "12 Lê Lợi, Phường Hồng Gai, Quảng Ninh": a street address with its unit and province.
fn printed_address(street: Option<&str>, unit: Option<&str>) -> Option<Value> {
    let place = unit.and_then(|u| admin_units().describe(u));
    let parts: Vec<String> = [street.map(str::to_owned), place]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| Value::String(parts.join(", ")))
}

fn field_of(record: &Value, source: &str, field: &str) -> Option<Value> {
    let text = |k: &str| record.get(k).and_then(Value::as_str);
    let v = match (source, field) {
        ("household", _) => record.get(field).cloned(),
        ("enterprise", "tax_code") => record.get("code").cloned(),
        ("enterprise", "address") => printed_address(text("address"), text("unit")),
        ("enterprise", _) => record.get(field).cloned(),
        (_, "personal_code") => record.get("code").cloned(),
        (_, "full_name") => Some(Value::String(full_name(record))),
        (_, "residence_address") => {
            printed_address(text("residence_address"), text("residence_unit"))
        }
        (_, "birth_place") => text("birth_place").map(|code| {
            Value::String(
                admin_units()
                    .describe(code)
                    .unwrap_or_else(|| code.to_owned()),
            )
        }),
        (_, "nationality") => text("nationality").map(|n| {
            Value::String(if n == "VN" {
                "Việt Nam".into()
            } else {
                n.to_owned()
            })
        }),
        _ => record.get(field).cloned(),
    }?;
    match &v {
        Value::Null => None,
        Value::String(s) if s.is_empty() && field != "middle_name" => None,
        _ => Some(v),
    }
}

/// `v` if the property has no `enum` or `v` is in it; a gender the register writes
/// `male`/`female` becomes the form's `nam`/`nu`.
fn fit_choices(v: Value, choices: Option<&[Value]>) -> Option<Value> {
    let Some(choices) = choices else {
        return Some(v);
    };
    if choices.contains(&v) {
        return Some(v);
    }
    let vietnamese = match v.as_str() {
        Some("male") => "nam",
        Some("female") => "nu",
        _ => return None,
    };
    let v = Value::String(vietnamese.to_owned());
    choices.contains(&v).then_some(v)
}

/// Convert to the schema's type where the register's differs (a number into a text field).
fn convert(v: Value, kind: Option<&str>) -> Value {
    match (kind, &v) {
        (Some("string"), Value::Number(n)) => Value::String(n.to_string()),
        (Some("string"), Value::Bool(b)) => Value::String(b.to_string()),
        (Some("string"), Value::Array(items)) => Value::String(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (Some("integer" | "number"), Value::String(s)) => {
            s.parse::<i64>().map(Value::from).unwrap_or(v.clone())
        }
        _ => v,
    }
}

fn set(form: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = form;
    for p in parents {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        at = map
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(map) = at {
        map.insert(last.clone(), value);
    }
}

/// Fill `form` with `prefilled` where the citizen has not typed anything yet (a property
/// absent, null or an empty string); what they typed is kept.
pub fn merge_into(form: &mut Value, prefilled: &Value) {
    let (Value::Object(into), Value::Object(from)) = (form, prefilled) else {
        return;
    };
    for (k, v) in from {
        match into.get_mut(k) {
            Some(existing @ Value::Object(_)) if v.is_object() => merge_into(existing, v),
            Some(Value::Null) | None => {
                into.insert(k.clone(), v.clone());
            }
            Some(Value::String(s)) if s.is_empty() => {
                into.insert(k.clone(), v.clone());
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_from_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "child": { "type": "object", "properties": {
                    "name": { "type": "string" }
                }},
                "mother": { "type": "object", "properties": {
                    "personal_code": { "type": "string", "x-prefill": "mother.personal_code" },
                    "name": { "type": "string", "x-prefill": "mother.full_name" }
                }},
                "declarant": { "type": "string", "x-prefill": "person.full_name" }
            }
        });
        let t = targets(&schema).unwrap();
        assert_eq!(t.len(), 3);
        assert!(
            t.iter()
                .any(|t| t.path == ["mother", "personal_code"] && t.source == "mother")
        );
        let bad = json!({"properties": {"x": {"x-prefill": "person.salary"}}});
        assert_eq!(targets(&bad).unwrap_err().code, ErrorCode::PrefillField);
        let bad = json!({"properties": {"x": {"x-prefill": "cousin.full_name"}}});
        assert_eq!(targets(&bad).unwrap_err().code, ErrorCode::PrefillField);
    }

    #[test]
    fn the_catalogue_names_only_known_sources() {
        for s in crate::catalogue::PREFILL_SOURCES {
            assert!(parse_source(s).is_some(), "{s}");
        }
    }

    #[test]
    fn registry_values_in_the_form_s_terms() {
        let p = json!({"code": "VN001085000001", "gender": "female", "nationality": "VN",
                       "residence_unit": "00070", "residence_address": "12 Lê Lợi",
                       "birth_place": "99999"});
        let addr = field_of(&p, "person", "residence_address").unwrap();
        assert!(addr.as_str().unwrap().starts_with("12 Lê Lợi, "), "{addr}");
        assert!(addr.as_str().unwrap().len() > "12 Lê Lợi, ".len());
        assert_eq!(
            field_of(&p, "person", "nationality"),
            Some(json!("Việt Nam"))
        );
        assert_eq!(field_of(&p, "person", "birth_place"), Some(json!("99999")));
        let g = field_of(&p, "person", "gender").unwrap();
        assert_eq!(
            fit_choices(g.clone(), Some(&[json!("nam"), json!("nu")])),
            Some(json!("nu"))
        );
        assert_eq!(fit_choices(g.clone(), None), Some(json!("female")));
        assert_eq!(fit_choices(g, Some(&[json!("M"), json!("F")])), None);
        let e = json!({"code": "0100109106", "unit": "00070", "address": "1 Tràng Tiền"});
        assert_eq!(
            field_of(&e, "enterprise", "tax_code"),
            Some(json!("0100109106"))
        );
    }

    #[test]
    fn fields_and_merging() {
        let p = json!({"code": "VN001085000001", "family_name": "Nguyễn", "middle_name": "",
                       "given_name": "An", "father": null});
        assert_eq!(
            field_of(&p, "person", "full_name"),
            Some(json!("Nguyễn An"))
        );
        assert_eq!(
            field_of(&p, "person", "personal_code"),
            Some(json!("VN001085000001"))
        );
        assert_eq!(field_of(&p, "person", "father"), None);
        assert_eq!(convert(json!(5), Some("string")), json!("5"));
        assert_eq!(convert(json!(["a", "b"]), Some("string")), json!("a, b"));
        let mut form = json!({"a": "typed", "b": "", "c": {"d": null}});
        let mut filled = Value::Object(Map::new());
        set(&mut filled, &["a".into()], json!("x"));
        set(&mut filled, &["b".into()], json!("y"));
        set(&mut filled, &["c".into(), "d".into()], json!("z"));
        merge_into(&mut form, &filled);
        assert_eq!(form, json!({"a": "typed", "b": "y", "c": {"d": "z"}}));
    }
}
