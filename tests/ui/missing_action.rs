fn main() {
    let post_id = 7;
    fabric_audit::audit!(resource_type = "post", resource_id = post_id);
}
