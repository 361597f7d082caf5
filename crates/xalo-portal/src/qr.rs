//! The receipt's QR code: the dossier code and the URL where anyone holding the receipt
//! can look the dossier's status up, drawn as inline SVG (no images to serve, sharp when
//! printed, no JavaScript).

use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use xalo_core::{Error, ErrorCode};

/// What the QR code holds: the lookup URL with the dossier code in it, so a phone's camera
/// opens the status page directly, and the code stays readable in the URL.
pub fn payload(lookup_base: &str, dossier_code: &str) -> String {
    let code: String = dossier_code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    format!("{}/{code}", lookup_base.trim_end_matches('/'))
}

/// The SVG element (without an XML declaration, to inline in a page) of the QR code for
/// `dossier_code`, described for screen readers by `label`.
pub fn svg(lookup_base: &str, dossier_code: &str, label: &str) -> Result<String, Error> {
    // Level M survives a crease or a smudge on a printed receipt.
    let code = QrCode::with_error_correction_level(payload(lookup_base, dossier_code), EcLevel::M)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("QR code: {e}")))?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(176, 176)
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    let start = image.find("<svg").unwrap_or(0);
    let label: String = label
        .chars()
        .map(|c| match c {
            '<' | '>' | '&' | '"' => ' ',
            c => c,
        })
        .collect();
    Ok(image[start..].replacen(
        "<svg",
        &format!("<svg role=\"img\" aria-label=\"{label}\""),
        1,
    ))
}

/// The receipt's QR code: it opens the dossier's page on the portal (`PUBLIC/dossiers/CODE`,
/// which shows it to its owner once signed in), labelled in the page's language.
pub fn receipt_svg(
    public_url: &str,
    dossier_code: &str,
    lang: xalo_web::Lang,
) -> Result<String, Error> {
    let label = match lang {
        xalo_web::Lang::Vi => format!("Mã QR của hồ sơ {dossier_code}"),
        xalo_web::Lang::En => format!("QR code of dossier {dossier_code}"),
    };
    svg(
        &format!("{}/dossiers", public_url.trim_end_matches('/')),
        dossier_code,
        &label,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_code() {
        assert_eq!(
            payload(
                "https://dichvucong.example.vn/tra-cuu/",
                "G01.07-261128-0001"
            ),
            "https://dichvucong.example.vn/tra-cuu/G01.07-261128-0001"
        );
        assert_eq!(payload("https://x/t", "A<b>\"c"), "https://x/t/Abc");
        let s = svg("https://x/t", "G01.07-261128-0001", "Mã hồ sơ <G01>").unwrap();
        assert!(s.starts_with("<svg role=\"img\" aria-label=\"Mã hồ sơ  G01 \""));
        assert!(s.trim_end().ends_with("</svg>"));
        // Dark modules are drawn: the picture is not empty.
        assert!(s.contains("#000000"));
        // Different codes, different pictures.
        let one = svg("https://x/t", "G01.07-261128-0001", "x").unwrap();
        assert_eq!(one, svg("https://x/t", "G01.07-261128-0001", "x").unwrap());
        assert_ne!(one, svg("https://x/t", "G01.07-261128-0002", "x").unwrap());
    }
}
