"""hog: a keepalive for tests. For a degraded session it allocates
`allocate_mib` MiB (its policy file's [config]) before answering; otherwise,
and for every other session, it does nothing. The load-time self-check
(a connected session) so passes whatever the config says."""

import wit_world
from wit_world.imports import config
from wit_world.imports.types import Action, Action_Nothing, Facts, SessionState


class WitWorld(wit_world.WitWorld):
    def tick(self, facts: Facts) -> list[Action]:
        mib = config.get("allocate_mib")
        if (
            facts.state == SessionState.DEGRADED
            and isinstance(mib, config.Value_Integer)
            and mib.value > 0
        ):
            hog = bytearray(mib.value << 20)
            hog[-1] = 1
        return [Action_Nothing()]
