//! Accessible forms: every input has a label, hints and errors are tied to it with
//! `aria-describedby`, and an error summary at the top links to each field in error.
//! Every form carries the session's CSRF token.

use askama::Template;
use xalo_core::Error;

use crate::lang::{Common, Lang};
use crate::page::template_error;

/// The kind of an input, which picks the phone keyboard too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    /// A phone number: `type=tel`.
    Phone,
    /// Digits typed as text (`inputmode=numeric`), such as a personal code.
    Digits,
    /// A PIN: hidden, numeric keyboard.
    Pin,
}

impl FieldKind {
    pub fn input_type(self) -> &'static str {
        match self {
            FieldKind::Text | FieldKind::Digits => "text",
            FieldKind::Phone => "tel",
            FieldKind::Pin => "password",
        }
    }
    pub fn inputmode(self) -> Option<&'static str> {
        match self {
            FieldKind::Digits | FieldKind::Pin => Some("numeric"),
            FieldKind::Phone => Some("tel"),
            FieldKind::Text => None,
        }
    }
}

/// One labelled input.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub kind: FieldKind,
    pub value: String,
    pub hint: Option<String>,
    pub error: Option<String>,
    pub autocomplete: Option<&'static str>,
    pub required: bool,
}

impl Field {
    pub fn new(name: &str, label: &str, kind: FieldKind) -> Field {
        Field {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
            value: String::new(),
            hint: None,
            error: None,
            autocomplete: None,
            required: true,
        }
    }
    pub fn value(mut self, v: &str) -> Field {
        self.value = v.to_owned();
        self
    }
    pub fn hint(mut self, h: &str) -> Field {
        self.hint = Some(h.to_owned());
        self
    }
    pub fn error(mut self, e: Option<String>) -> Field {
        self.error = e;
        self
    }
    pub fn autocomplete(mut self, a: &'static str) -> Field {
        self.autocomplete = Some(a);
        self
    }
}

/// A POST form.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub csrf_token: String,
    pub hidden: Vec<(String, String)>,
    pub fields: Vec<Field>,
    pub submit: String,
}

#[derive(Template)]
#[template(path = "form.html")]
struct FormTemplate<'a> {
    form: &'a Form,
    errors: Vec<(String, String)>,
    errors_title: &'static str,
}

impl Form {
    pub fn new(action: &str, csrf_token: &str, submit: &str) -> Form {
        Form {
            action: action.to_owned(),
            csrf_token: csrf_token.to_owned(),
            hidden: Vec::new(),
            fields: Vec::new(),
            submit: submit.to_owned(),
        }
    }
    pub fn field(mut self, f: Field) -> Form {
        self.fields.push(f);
        self
    }
    pub fn hidden(mut self, name: &str, value: &str) -> Form {
        self.hidden.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn has_errors(&self) -> bool {
        self.fields.iter().any(|f| f.error.is_some())
    }

    /// The form as escaped HTML, with an error summary when any field is in error.
    pub fn render(&self, lang: Lang) -> Result<String, Error> {
        let errors = self
            .fields
            .iter()
            .filter_map(|f| f.error.clone().map(|e| (f.name.clone(), e)))
            .collect();
        FormTemplate {
            form: self,
            errors,
            errors_title: Common::get(lang).errors_title,
        }
        .render()
        .map_err(template_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_errors_and_token() {
        let form = Form::new("/login", "tok\"en", "Go")
            .field(
                Field::new("phone", "Phone", FieldKind::Phone)
                    .hint("With country code")
                    .error(Some("Enter a number".into())),
            )
            .field(Field::new("code", "Code", FieldKind::Digits).value("<x>"));
        let html = form.render(Lang::En).unwrap();
        assert!(html.contains("<label for=\"phone\">Phone</label>"));
        assert!(html.contains("aria-describedby=\"phone-hint phone-error\""));
        assert!(html.contains("aria-invalid=\"true\""));
        assert!(html.contains("href=\"#phone\""));
        assert!(html.contains("There is a problem"));
        assert!(!html.contains("<x>"));
        assert!(!html.contains("tok\"en"));
        assert!(html.contains("inputmode=\"numeric\""));
    }
}
