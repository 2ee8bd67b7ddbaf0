//! What must not compile.

#[test]
fn audit_without_an_action_does_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
