#![deny(warnings)]
use omni_runtime::prelude::*;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

#[derive(Default)]
struct Session;

/// Everyone.
#[collection(model = Player)]
struct Players;

#[collection(model = Player, name = "lobby")]
pub(crate) struct WaitingPlayers {
    capacity: usize,
}

#[collection(model = Player)]
struct ChatMessages;

impl CollectionPermissions<Session> for Players {
    fn can_create(&self, _ctx: &Ctx<Session>, _model: &Player) -> bool {
        true
    }
}

fn main() {
    let _seeded: Seeded<Players> = Players::with([Player::default()]);
    let _empty: Seeded<ChatMessages> = ChatMessages::empty();
    let waiting = WaitingPlayers { capacity: 4 };
    assert_eq!(waiting.capacity, 4);
    assert_eq!(<WaitingPlayers as Collection>::NAME, "lobby");
    assert_eq!(<ChatMessages as Collection>::NAME, "chatMessages");
    assert_eq!(<Players as Collection>::DOCS, Some("Everyone."));
}
