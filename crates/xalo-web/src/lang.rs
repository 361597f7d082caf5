//! Languages and typed translation catalogues. Vietnamese is the default.

use serde::{Deserialize, Serialize};

/// A language a page can be shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Vi,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Vi, Lang::En];

    /// The BCP 47 tag, as the `lang` attribute and `ui_locales` use it.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// The language's own name, as the switch shows it.
    pub fn own_name(self) -> &'static str {
        match self {
            Lang::Vi => "Tiếng Việt",
            Lang::En => "English",
        }
    }

    /// `vi`, `en`, or a tag that starts with one of them (`en-GB`).
    pub fn from_code(s: &str) -> Option<Lang> {
        let primary = s.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The first supported language of a space-separated preference list (`ui_locales`).
    pub fn first_of(list: &str) -> Option<Lang> {
        list.split_whitespace().find_map(Lang::from_code)
    }
}

/// Define a catalogue: a struct with one `&'static str` per message, and its Vietnamese
/// and English editions. A missing translation is a compile error, not a blank page.
///
/// ```
/// xalo_web::catalogue! {
///     pub struct Greeting {
///         hello: "Xin chào" / "Hello",
///     }
/// }
/// assert_eq!(Greeting::get(xalo_web::Lang::En).hello, "Hello");
/// ```
#[macro_export]
macro_rules! catalogue {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident : $vi:literal / $en:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name { $(pub $field: &'static str),* }

        impl $name {
            pub const VI: $name = $name { $($field: $vi),* };
            pub const EN: $name = $name { $($field: $en),* };

            pub fn get(lang: $crate::Lang) -> &'static $name {
                match lang {
                    $crate::Lang::Vi => &Self::VI,
                    $crate::Lang::En => &Self::EN,
                }
            }
        }
    };
}

catalogue! {
    /// Messages of the layout and forms, shared by every application.
    pub struct Common {
        skip_link: "Chuyển đến nội dung chính" / "Skip to main content",
        site_name: "Cổng dịch vụ số Xalo" / "Xalo digital services",
        language: "Ngôn ngữ" / "Language",
        errors_title: "Có lỗi cần sửa" / "There is a problem",
        required: "bắt buộc" / "required",
        footer: "Một danh tính cho mọi dịch vụ công." / "One identity for every public service.",
        expired: "Phiên làm việc đã hết hạn. Vui lòng thử lại." / "Your session has expired. Please try again.",
        csrf: "Biểu mẫu đã hết hạn hoặc không hợp lệ. Vui lòng tải lại trang." / "The form has expired or is not valid. Please reload the page.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Lang::from_code("en-GB"), Some(Lang::En));
        assert_eq!(Lang::from_code("VI"), Some(Lang::Vi));
        assert_eq!(Lang::from_code("et"), None);
        assert_eq!(Lang::first_of("et en vi"), Some(Lang::En));
        assert_eq!(Lang::default(), Lang::Vi);
        assert_eq!(Common::get(Lang::En).skip_link, "Skip to main content");
    }
}
