//! The one layout: `lang` attribute, skip link, language switch, a single `h1`, and a
//! mobile-first style sheet inline (one request, no JavaScript).

use askama::Template;
use axum::http::Uri;
use axum::response::Html;
use xalo_core::{Error, ErrorCode};

use crate::lang::{Common, Lang};

/// Mobile-first, high-contrast (all text at least 4.5:1), visible focus ring.
pub const CSS: &str = "\
*,*::before,*::after{box-sizing:border-box}\
body{margin:0;font:1.125rem/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans',sans-serif;color:#0b0c0c;background:#fff}\
a{color:#1d4f91}a:visited{color:#4c2c92}\
:focus-visible{outline:3px solid #fd0;outline-offset:0;box-shadow:0 0 0 6px #0b0c0c}\
.skip{position:absolute;left:-999px;top:0;background:#fd0;color:#0b0c0c;padding:.5rem 1rem;z-index:9}\
.skip:focus{left:0}\
.bar{display:flex;flex-wrap:wrap;justify-content:space-between;align-items:center;gap:.5rem;background:#a50e1a;color:#fff;padding:.75rem 1rem}\
.bar a{color:#fff}.brand{font-weight:700}\
.langs{list-style:none;margin:0;padding:0;display:flex;gap:1rem}\
main{display:block;max-width:40rem;margin:0 auto;padding:1rem}\
h1{font-size:1.75rem;line-height:1.2;margin:.5rem 0 1rem}\
.field{margin:0 0 1.25rem}label{display:block;font-weight:700;margin-bottom:.25rem}\
.hint{color:#505a5f;margin:0 0 .25rem}\
input[type=text],input[type=tel],input[type=password],input[type=number],input[type=date],input[type=email],select,textarea{width:100%;max-width:24rem;font:inherit;padding:.5rem;border:2px solid #0b0c0c;border-radius:0;background:#fff}\
textarea{max-width:36rem}input[type=checkbox],input[type=radio]{width:1.5rem;height:1.5rem;vertical-align:middle}label.inline{display:inline;font-weight:400;margin-left:.5rem}\
.tag{display:inline-block;font-size:.875rem;font-weight:700;color:#0b0c0c;background:#e8f1f8;border:1px solid #1d4f91;padding:0 .4rem;margin-left:.25rem}\
.field-error{border-left:5px solid #d4351c;padding-left:.75rem}.field-error input{border-color:#d4351c}\
.error{color:#d4351c;font-weight:700;margin:0 0 .25rem}\
.error-summary{border:5px solid #d4351c;padding:1rem;margin-bottom:1.5rem}\
.error-summary h2{margin-top:0;font-size:1.25rem}.error-summary a{color:#d4351c;font-weight:700}\
.button{display:inline-block;font:inherit;font-weight:700;color:#fff;background:#00703c;border:0;border-bottom:3px solid #002d18;padding:.6rem 1.2rem;cursor:pointer;text-decoration:none;min-height:44px}\
.button:visited{color:#fff}.button.secondary{background:#f3f2f1;color:#0b0c0c;border-bottom-color:#929191}\
.code{font-size:3rem;font-weight:700;letter-spacing:.3em;font-variant-numeric:tabular-nums}\
.panel{border:2px solid #0b0c0c;padding:1rem;margin:0 0 1.5rem}\
.visually-hidden{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}\
footer{border-top:1px solid #b1b4b6;margin-top:2rem;padding:1rem;color:#505a5f}\
@media (min-width:40rem){h1{font-size:2.25rem}main{padding:2rem 1rem}}\
";

struct LangLink {
    code: &'static str,
    name: &'static str,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "layout.html")]
struct Layout<'a> {
    lang_code: &'static str,
    title: &'a str,
    text: &'static Common,
    css: &'static str,
    switch: Vec<LangLink>,
    body: &'a str,
}

/// A page: its language, title, the request's URI (for the language switch) and the
/// already-rendered (escaped) body.
pub struct Page<'a> {
    pub lang: Lang,
    pub title: &'a str,
    pub uri: &'a Uri,
    pub body: String,
}

impl Page<'_> {
    pub fn render(&self) -> Result<String, Error> {
        let switch = Lang::ALL
            .into_iter()
            .map(|l| LangLink {
                code: l.code(),
                name: l.own_name(),
                href: switch_href(self.uri, l),
                current: l == self.lang,
            })
            .collect();
        Layout {
            lang_code: self.lang.code(),
            title: self.title,
            text: Common::get(self.lang),
            css: CSS,
            switch,
            body: &self.body,
        }
        .render()
        .map_err(template_error)
    }
}

/// Render a page as an HTML response.
pub fn html(page: &Page<'_>) -> Result<Html<String>, Error> {
    page.render().map(Html)
}

pub fn template_error(e: askama::Error) -> Error {
    Error::new(ErrorCode::WebTemplate, e.to_string())
}

/// The same path and query with `lang` set to `target`: the switch is a plain link, so it
/// works without JavaScript and keeps the rest of the query.
pub fn switch_href(uri: &Uri, target: Lang) -> String {
    let mut query: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("lang="))
        .map(str::to_owned)
        .collect();
    query.push(format!("lang={}", target.code()));
    format!("{}?{}", uri.path(), query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_keeps_the_query() {
        let uri: Uri = "/login?x=1&lang=vi".parse().unwrap();
        assert_eq!(switch_href(&uri, Lang::En), "/login?x=1&lang=en");
        let uri: Uri = "/".parse().unwrap();
        assert_eq!(switch_href(&uri, Lang::Vi), "/?lang=vi");
    }

    #[test]
    fn layout_is_accessible() {
        let uri: Uri = "/a".parse().unwrap();
        let page = Page {
            lang: Lang::En,
            title: "Sign <in>",
            uri: &uri,
            body: "<p>x</p>".into(),
        };
        let html = page.render().unwrap();
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("href=\"#main\""));
        assert!(
            html.contains("Sign &#60;in&#62;") || html.contains("Sign &lt;in&gt;"),
            "{html}"
        );
        assert!(html.contains("<p>x</p>"));
        assert!(html.contains("href=\"/a?lang=vi\""));
    }
}
