#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = xalo_trust::authority::parse_csr(data);
});
