#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xalo_trust::ocsp::parse_request(data);
});
