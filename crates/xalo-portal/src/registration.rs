//! What an approved dossier writes to a base register: a birth, a death, a marriage or a
//! new permanent address to the population register, a new enterprise to the business
//! register.
//!
//! A procedure opts in with `registration` in the catalogue (`{"kind": "birth"}`; an
//! enterprise also names its `legal_form`), and the catalogue checks at start that the form
//! requires every field the registration reads ([`Kind::fields`]). On approval the back
//! office sends the registration through the portal's security gateway, on behalf of the
//! approving officer, with the dossier code as the purpose (`X-Road-Issue`) and as the
//! `Idempotency-Key`: an approval retried after a timeout or a crash gets the register's
//! first answer (the same child's code), never a second record. The register's rules
//! decide; its refusal reaches the officer with the register's own message, and the dossier
//! stays in processing.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use xalo_core::{Error, ErrorCode};

use crate::catalogue::Procedure;
use crate::dossier::Dossier;
use crate::exchange::{CallError, Exchange, Register};

/// The kinds of registration a procedure can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Birth,
    Death,
    Marriage,
    Residence,
    Enterprise,
}

/// A procedure's `registration` in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub kind: Kind,
    /// The enterprise's legal form, as the business register names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_form: Option<String>,
}

impl Kind {
    /// The form fields the registration reads; the catalogue requires each in the form.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Birth => &[
                "applicant_personal_code",
                "applicant_relationship",
                "child_family_name",
                "child_given_name",
                "child_birth_date",
                "child_gender",
                "child_birth_place_unit",
            ],
            Kind::Death => &["deceased_personal_code", "death_date"],
            Kind::Marriage => &["applicant_personal_code", "partner_personal_code"],
            Kind::Residence => &["applicant_personal_code", "new_address", "new_address_unit"],
            Kind::Enterprise => &[
                "applicant_personal_code",
                "enterprise_name",
                "enterprise_address",
                "enterprise_unit",
                "charter_capital_vnd",
                "business_lines",
                "representative_personal_code",
            ],
        }
    }

    fn register(self) -> Register {
        match self {
            Kind::Enterprise => Register::Business,
            _ => Register::Population,
        }
    }

    /// The register's service (the first segment of its path).
    fn service(self) -> &'static str {
        match self {
            Kind::Birth => "births",
            Kind::Death => "deaths",
            Kind::Marriage => "marriages",
            Kind::Residence => "address-changes",
            Kind::Enterprise => "enterprises",
        }
    }

    /// The register's name for people, in Vietnamese and English.
    pub fn register_name(self) -> (&'static str, &'static str) {
        match self.register() {
            Register::Population => ("Cơ sở dữ liệu quốc gia về dân cư", "population register"),
            Register::Business => (
                "Cơ sở dữ liệu quốc gia về đăng ký doanh nghiệp",
                "business register",
            ),
        }
    }
}

impl Registration {
    /// Check the registration against its procedure's form (at catalogue load).
    pub fn check(&self, p: &Procedure) -> Result<(), String> {
        let required: Vec<&str> = p.form["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for f in self.kind.fields() {
            if !required.contains(f) {
                return Err(format!(
                    "the {:?} registration reads {f}, which the form does not require",
                    self.kind
                ));
            }
        }
        match (self.kind, &self.legal_form) {
            (Kind::Enterprise, None) => {
                Err("an enterprise registration names its legal_form".into())
            }
            (Kind::Enterprise, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err("only an enterprise registration has a legal_form".into()),
        }
    }

    /// The register's request for the approved dossier `d` (`today` is the approval's date,
    /// `YYYY-MM-DD`, the date of a marriage registered at the office).
    pub fn request(&self, d: &Dossier, p: &Procedure, today: &str) -> Result<Value, Error> {
        let text = |name: &str| -> Result<String, Error> {
            match d.form.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(Error::new(
                    ErrorCode::OfficeRegisterRefused,
                    format!("the dossier's form has no {name}, which the register needs"),
                )),
            }
        };
        let optional = |name: &str| text(name).ok();
        let basis = format!(
            "{}; hồ sơ {}",
            p.legal_basis.first().map_or("", String::as_str),
            d.code
        );
        let applicant = text("applicant_personal_code")?;
        Ok(match self.kind {
            Kind::Birth => {
                let other = optional("other_parent_personal_code");
                // The applicant is the mother (mẹ), the father (cha) or a guardian; a
                // guardian names the mother as the other parent.
                let (mother, father) = match text("applicant_relationship")?.as_str() {
                    "me" => (Some(applicant), other),
                    "cha" => (other, Some(applicant)),
                    _ => (other, None),
                };
                let mother = mother.ok_or_else(|| {
                    Error::new(
                        ErrorCode::OfficeRegisterRefused,
                        "the mother's personal code is needed to register the birth",
                    )
                })?;
                json!({
                    "family_name": text("child_family_name")?,
                    "middle_name": optional("child_middle_name").unwrap_or_default(),
                    "given_name": text("child_given_name")?,
                    "birth_date": text("child_birth_date")?,
                    "gender": if text("child_gender")? == "nu" { "female" } else { "male" },
                    "birth_place": text("child_birth_place_unit")?,
                    "mother": mother,
                    "father": father,
                    "legal_basis": basis,
                })
            }
            Kind::Death => json!({
                "code": text("deceased_personal_code")?,
                "death_date": text("death_date")?,
                "legal_basis": basis,
            }),
            Kind::Marriage => json!({
                "spouses": [applicant, text("partner_personal_code")?],
                "date": today,
                "legal_basis": basis,
            }),
            Kind::Residence => json!({
                "code": applicant,
                "unit": text("new_address_unit")?,
                "address": text("new_address")?,
                "legal_basis": basis,
            }),
            Kind::Enterprise => {
                let representative = text("representative_personal_code")?;
                let mut founders = vec![applicant];
                if !founders.contains(&representative) {
                    founders.push(representative.clone());
                }
                let capital: i64 = text("charter_capital_vnd")?.parse().map_err(|_| {
                    Error::new(
                        ErrorCode::OfficeRegisterRefused,
                        "the charter capital is not a whole number of dong",
                    )
                })?;
                json!({
                    "name": text("enterprise_name")?,
                    "foreign_name": null,
                    "unit": text("enterprise_unit")?,
                    "address": text("enterprise_address")?,
                    "legal_form": self.legal_form.clone().unwrap_or_default(),
                    "charter_capital": capital,
                    "business_lines": business_lines(&text("business_lines")?),
                    "representative": representative,
                    "founders": founders,
                    "legal_basis": basis,
                })
            }
        })
    }

    /// Write the approved dossier to its register through the exchange, once.
    pub async fn write(
        &self,
        exchange: &Exchange,
        d: &Dossier,
        p: &Procedure,
        officer: &str,
        today: &str,
    ) -> Result<Registered, Error> {
        let body = self.request(d, p, today)?;
        let answer: Value = exchange
            .post(
                self.kind.register(),
                self.kind.service(),
                &body,
                officer,
                &d.code,
                &d.code,
            )
            .await
            .map_err(|e| match e {
                CallError::Unreachable(m) => Error::new(ErrorCode::OfficeRegisterUnreachable, m),
                CallError::Refused { message, .. } | CallError::NotFound(message) => {
                    Error::new(ErrorCode::OfficeRegisterRefused, message)
                }
            })?;
        // Births and enterprises answer with the new record and its change; the others with
        // the change.
        let change = answer.get("change").unwrap_or(&answer);
        let record_code = answer
            .get("record")
            .and_then(|r| r["code"].as_str())
            .map(str::to_owned);
        Ok(Registered {
            kind: self.kind,
            subject: change["subject"].as_str().unwrap_or_default().to_owned(),
            seq: change["seq"].as_i64().unwrap_or_default(),
            evidence: change["evidence"].as_str().unwrap_or_default().to_owned(),
            record_code,
        })
    }
}

/// VSIC codes in what the applicant typed: `6201, 6202` or `6201 6202`.
fn business_lines(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What the register recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registered {
    pub kind: Kind,
    /// The person or enterprise changed.
    pub subject: String,
    /// The change's number in the register's history.
    pub seq: i64,
    /// The change's SHA-256, as the register put it in the ledger.
    pub evidence: String,
    /// The new record's code: the child's personal code, the enterprise's tax code.
    pub record_code: Option<String>,
}

impl Registered {
    /// The result document's lines about the registration (label, value).
    pub fn result_fields(&self) -> Vec<(String, String)> {
        let (register, _) = self.kind.register_name();
        let mut out = Vec::new();
        match (self.kind, &self.record_code) {
            (Kind::Birth, Some(code)) => {
                out.push(("Số định danh cá nhân của trẻ".to_owned(), code.clone()))
            }
            (Kind::Enterprise, Some(code)) => {
                out.push(("Mã số doanh nghiệp".to_owned(), code.clone()))
            }
            _ => {}
        }
        out.push((
            "Đã cập nhật vào".to_owned(),
            format!("{register}, thay đổi số {}", self.seq),
        ));
        out
    }

    /// The timeline's note.
    pub fn note(&self) -> String {
        let (_, register) = self.kind.register_name();
        match &self.record_code {
            Some(code) => format!("{register}: change {} registered {code}", self.seq),
            None => format!(
                "{register}: change {} recorded for {}",
                self.seq, self.subject
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn business_lines_in_what_people_type() {
        assert_eq!(
            business_lines("6201, 6202;4711  5610"),
            ["6201", "6202", "4711", "5610"]
        );
        assert!(business_lines(" , ").is_empty());
    }

    fn dossier(procedure: &str, form: Value) -> Dossier {
        Dossier {
            code: "QNI.HL-261128-0001".into(),
            procedure_code: procedure.into(),
            applicant: "VN022090000001".into(),
            applicant_name: "NGUYỄN VĂN AN".into(),
            agency: "QNI.HL".into(),
            current_agency: "QNI.HL".into(),
            current_step: "approve".into(),
            officer: None,
            state: crate::dossier::State::Processing,
            channel: crate::dossier::Channel::Online,
            form,
            supplement_note: None,
            created_unix: 0,
            updated_unix: 0,
            submitted_unix: None,
            due_unix: None,
            finished_unix: None,
            rating: None,
            rating_note: None,
            version: 1,
        }
    }

    #[test]
    fn a_birth_names_the_parents_by_who_applies() {
        let cat = crate::catalogue::catalogue().unwrap();
        let p = cat.require("1.001193").unwrap();
        let r = p.registration.clone().unwrap();
        let form = json!({
            "applicant_personal_code": "VN022090000001", "applicant_relationship": "cha",
            "other_parent_personal_code": "VN022192000002",
            "child_family_name": "Nguyễn", "child_given_name": "Bình", "child_middle_name": "",
            "child_birth_date": "2026-11-20", "child_gender": "nu",
            "child_birth_place_unit": "06970",
        });
        let father_applies = r
            .request(&dossier(&p.code, form.clone()), p, "2026-11-28")
            .unwrap();
        assert_eq!(father_applies["father"], "VN022090000001");
        assert_eq!(father_applies["mother"], "VN022192000002");
        assert_eq!(father_applies["gender"], "female");
        assert_eq!(father_applies["birth_place"], "06970");
        assert!(
            father_applies["legal_basis"]
                .as_str()
                .unwrap()
                .contains("QNI.HL-261128-0001")
        );
        let mut f = form.clone();
        f["applicant_relationship"] = json!("me");
        f["other_parent_personal_code"] = Value::Null;
        let mother_alone = r.request(&dossier(&p.code, f), p, "2026-11-28").unwrap();
        assert_eq!(mother_alone["mother"], "VN022090000001");
        assert!(mother_alone["father"].is_null());
        // A father without the mother's code cannot register the birth.
        let mut f = form;
        f["other_parent_personal_code"] = json!("");
        let e = r
            .request(&dossier(&p.code, f), p, "2026-11-28")
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::OfficeRegisterRefused);
        assert!(e.message.contains("mother"), "{e}");
    }

    #[test]
    fn every_kind_of_registration_is_used_by_a_procedure() {
        let cat = crate::catalogue::catalogue().unwrap();
        let kinds: Vec<Kind> = cat
            .procedures()
            .iter()
            .filter_map(|p| p.registration.as_ref().map(|r| r.kind))
            .collect();
        for k in [
            Kind::Birth,
            Kind::Death,
            Kind::Marriage,
            Kind::Residence,
            Kind::Enterprise,
        ] {
            assert!(kinds.contains(&k), "{k:?} is used by some procedure");
        }
    }
}
