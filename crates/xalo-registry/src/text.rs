//! Text as people search it: Vietnamese without diacritics, lower case, single spaces, so
//! that "nguyen van an" finds "Nguyễn Văn An".

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub fn fold(s: &str) -> String {
    let folded: String = s
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .map(|c| match c {
            'đ' | 'Đ' => 'd',
            c => c.to_ascii_lowercase(),
        })
        .flat_map(char::to_lowercase)
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn folds_vietnamese() {
        assert_eq!(super::fold("Nguyễn  Văn Đức"), "nguyen van duc");
        assert_eq!(super::fold("Đăng ký khai sinh"), "dang ky khai sinh");
        assert_eq!(super::fold("CÔNG TY Cổ phần"), "cong ty co phan");
    }
}
