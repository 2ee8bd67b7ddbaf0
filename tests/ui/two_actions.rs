fn main() {
    fabric_audit::audit!(action = "a", action = "b");
}
