//! What a pool's logins have in common, worked out once: the clients of one
//! app send the same startup packet, so their settings, and the
//! ParameterStatus messages they are sent, are the same too.

use crate::backend::{Overrides, ServerParams, Settings};
use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// What a login with a given startup packet works out: the client's
/// reported settings and overrides (shared, copied on a change), and the
/// ParameterStatus messages it is sent. The next login with the same packet
/// reuses them and skips the work (hashing, allocations, rendering).
#[derive(Debug, Clone)]
pub struct LoginTemplate {
    pub params: Arc<Settings>,
    pub settings: Overrides,
    pub status: Bytes,
}

/// A remembered startup packet and what it came to.
#[derive(Debug)]
struct KnownStartup {
    /// The server's parameters it was worked out from.
    server: ServerParams,
    context: bool,
    /// Its parameters but `user` and `database`, which set nothing.
    startup: Vec<(String, String)>,
    template: LoginTemplate,
}

impl KnownStartup {
    /// Whether a login with these inputs comes to this one's template.
    fn is(&self, server: &ServerParams, context: bool, startup: &[(String, String)]) -> bool {
        self.context == context
            && self
                .startup
                .iter()
                .eq(startup.iter().filter(|(n, _)| keyed(n)))
            && (Arc::ptr_eq(&self.server, server) || self.server == *server)
    }
}

/// Startup parameters that can change what a login works out.
fn keyed(name: &str) -> bool {
    !matches!(name, "user" | "database")
}

/// The startup settings of a pool's recent logins. The clients of one app
/// send the same startup packet, and a copy of its settings per client
/// would cost each one, idle or not, several hundred bytes. Both maps are
/// copied on a change (`Arc::make_mut`), so sharing them is safe.
#[derive(Debug, Default)]
pub struct SharedStartups {
    seen: Mutex<Vec<(Arc<Settings>, Overrides)>>,
    users: Mutex<Vec<Arc<str>>>,
    logins: Mutex<Vec<KnownStartup>>,
}

impl SharedStartups {
    /// How many different startup packets are remembered.
    const KEPT: usize = 8;

    /// The same settings as an earlier login's, as its copy; else these,
    /// remembered (the oldest forgotten beyond [`Self::KEPT`]).
    pub fn share(&self, params: Settings, settings: Overrides) -> (Arc<Settings>, Overrides) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, o)) = seen
            .iter()
            .find(|(p, o)| o.same_as(&settings) && **p == params)
        {
            return (p.clone(), o.clone());
        }
        let shared = (Arc::new(params), settings);
        if seen.len() == Self::KEPT {
            seen.remove(0);
        }
        seen.push(shared.clone());
        shared
    }

    /// The same user name as an earlier login's, as its copy (the most
    /// recent [`Self::KEPT`] names are remembered).
    pub fn share_user(&self, user: &str) -> Arc<str> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = users.iter().find(|u| ***u == *user) {
            return u.clone();
        }
        let shared: Arc<str> = Arc::from(user);
        if users.len() == Self::KEPT {
            users.remove(0);
        }
        users.push(shared.clone());
        shared
    }

    /// What an earlier login with the same startup packet worked out, if
    /// one is remembered. `startup` is the packet's parameters; `context`
    /// whether the tenant is context-isolated (its guard drops more settings).
    pub fn login(
        &self,
        server: &ServerParams,
        context: bool,
        startup: &[(String, String)],
    ) -> Option<LoginTemplate> {
        let logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        logins
            .iter()
            .find(|k| k.is(server, context, startup))
            .map(|k| k.template.clone())
    }

    /// Remembers what a login worked out (the oldest forgotten beyond
    /// [`Self::KEPT`] startup packets).
    pub fn remember_login(
        &self,
        server: ServerParams,
        context: bool,
        startup: &[(String, String)],
        template: LoginTemplate,
    ) {
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        // Logins that missed at the same moment all work it out: keep one.
        if logins.iter().any(|k| k.is(&server, context, startup)) {
            return;
        }
        let startup = startup.iter().filter(|(n, _)| keyed(n)).cloned().collect();
        if logins.len() == Self::KEPT {
            logins.remove(0);
        }
        logins.push(KnownStartup {
            server,
            context,
            startup,
            template,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(app: &str, digits: &str) -> (Settings, Overrides) {
        let params = [("application_name".to_owned(), app.to_owned())]
            .into_iter()
            .collect();
        let mut settings = Overrides::default();
        settings.set("extra_float_digits", Arc::from(digits));
        (params, settings)
    }

    #[test]
    fn logins_with_the_same_startup_settings_share_one_copy() {
        let shared = SharedStartups::default();
        let (p, o) = startup("web", "3");
        let (first, _) = shared.share(p, o);
        let (p, o) = startup("web", "3");
        let (second, settings) = shared.share(p, o);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(settings.get("extra_float_digits").map(|r| &**r), Some("3"));
        // A different value of either map is a copy of its own.
        let (p, o) = startup("worker", "3");
        assert!(!Arc::ptr_eq(&first, &shared.share(p, o).0));
        let (p, o) = startup("web", "2");
        let (third, settings) = shared.share(p, o);
        assert!(!Arc::ptr_eq(&first, &third));
        assert_eq!(settings.get("extra_float_digits").map(|r| &**r), Some("2"));
        // Beyond KEPT different packets the oldest is forgotten.
        for i in 0..SharedStartups::KEPT {
            let (p, o) = startup(&format!("app{i}"), "3");
            shared.share(p, o);
        }
        let (p, o) = startup("web", "3");
        assert!(!Arc::ptr_eq(&first, &shared.share(p, o).0));
        let app = shared.share_user("app");
        assert!(Arc::ptr_eq(&app, &shared.share_user("app")));
        assert_eq!(&*shared.share_user("worker"), "worker");
        assert!(!Arc::ptr_eq(&app, &shared.share_user("worker")));
    }

    fn template(app: &str) -> LoginTemplate {
        let (p, o) = startup(app, "3");
        LoginTemplate {
            params: Arc::new(p),
            settings: o,
            status: Bytes::from(app.to_owned()),
        }
    }

    #[test]
    fn a_login_reuses_what_the_same_startup_packet_came_to() {
        let shared = SharedStartups::default();
        let server: ServerParams = Arc::new(vec![("TimeZone".into(), "UTC".into())]);
        let packet = |user: &str, app: &str| {
            vec![
                ("user".to_owned(), user.to_owned()),
                ("database".to_owned(), "app".to_owned()),
                ("application_name".to_owned(), app.to_owned()),
            ]
        };
        assert!(shared.login(&server, false, &packet("a", "web")).is_none());
        shared.remember_login(server.clone(), false, &packet("a", "web"), template("web"));
        // Another user of the same app: the same template.
        let hit = shared
            .login(&server, false, &packet("b", "web"))
            .expect("hit");
        assert_eq!(&hit.status[..], b"web");
        // Equal server parameters in another Arc count as the same.
        let again: ServerParams = Arc::new(vec![("TimeZone".into(), "UTC".into())]);
        assert!(shared.login(&again, false, &packet("b", "web")).is_some());
        // Anything else that matters is a miss: a setting, the isolation,
        // the server's parameters, an added parameter.
        assert!(shared
            .login(&server, false, &packet("a", "worker"))
            .is_none());
        assert!(shared.login(&server, true, &packet("a", "web")).is_none());
        let other: ServerParams = Arc::new(vec![("TimeZone".into(), "Europe/Paris".into())]);
        assert!(shared.login(&other, false, &packet("a", "web")).is_none());
        let mut more = packet("a", "web");
        more.push(("options".into(), "-c work_mem=1MB".into()));
        assert!(shared.login(&server, false, &more).is_none());
        // Logins that missed together remember one copy: the first stays.
        shared.remember_login(
            server.clone(),
            false,
            &packet("c", "web"),
            template("other"),
        );
        let hit = shared
            .login(&server, false, &packet("a", "web"))
            .expect("hit");
        assert_eq!(&hit.status[..], b"web");
        // Beyond KEPT packets the oldest is forgotten.
        for i in 0..SharedStartups::KEPT {
            let app = format!("app{i}");
            shared.remember_login(server.clone(), false, &packet("a", &app), template(&app));
        }
        assert!(shared.login(&server, false, &packet("a", "web")).is_none());
        assert!(shared.login(&server, false, &packet("a", "app7")).is_some());
    }
}
