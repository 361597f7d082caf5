#![no_main]
// Reading and verifying (with no trusted roots) must never panic, whatever the bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xalo_trust::container::Container::read(data);
    let _ = xalo_trust::container::verify(data, &xalo_trust::chain::TrustAnchors::default());
});
