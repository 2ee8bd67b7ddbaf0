//! Who acts: the trait that lets `audit!(actor = &p, ..)` fill the actor.

/// An actor that `audit!` can record: a user, a service, an API key.
///
/// Implement it for your application's principal type; `audit!(actor = &p,
/// ..)` then fills `actor_id`, `actor_type`, `actor_email`, `actor_name`
/// and `actor_flags` from it. Only [`id`](Principal::id) is required.
///
/// # Examples
///
/// ```
/// use fabric_audit::Principal;
///
/// struct User {
///     id: u64,
///     id_text: String,
///     roles: Vec<String>,
/// }
///
/// impl Principal for User {
///     fn id(&self) -> &str {
///         &self.id_text
///     }
///     fn kind(&self) -> Option<&str> {
///         Some("user")
///     }
///     fn flags(&self) -> &[String] {
///         &self.roles
///     }
/// }
///
/// let user = User { id: 7, id_text: "7".into(), roles: vec!["admin".into()] };
/// assert_eq!(user.kind(), Some("user"));
/// ```
pub trait Principal {
    /// The actor's stable id.
    fn id(&self) -> &str;

    /// The actor's type: `user`, `service`, `api_key`, …
    fn kind(&self) -> Option<&str> {
        None
    }

    /// The actor's email address.
    fn email(&self) -> Option<&str> {
        None
    }

    /// The actor's display name.
    fn name(&self) -> Option<&str> {
        None
    }

    /// The actor's flags: roles, or markers such as `impersonated`.
    fn flags(&self) -> &[String] {
        &[]
    }
}

/// Forwards every method through a smart pointer or reference.
macro_rules! forward {
    ($($ptr:ty),+) => {$(
        impl<P: Principal + ?Sized> Principal for $ptr {
            fn id(&self) -> &str {
                (**self).id()
            }
            fn kind(&self) -> Option<&str> {
                (**self).kind()
            }
            fn email(&self) -> Option<&str> {
                (**self).email()
            }
            fn name(&self) -> Option<&str> {
                (**self).name()
            }
            fn flags(&self) -> &[String] {
                (**self).flags()
            }
        }
    )+};
}

forward!(&P, Box<P>, std::sync::Arc<P>);
