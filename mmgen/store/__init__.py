"""SQL store: ORM models (`models`), opening and migrating (`db`), shared queries (`repo`)."""

from mmgen.store.db import Store, current_revision, downgrade, head_revision, open_store, upgrade

__all__ = ["Store", "current_revision", "downgrade", "head_revision", "open_store", "upgrade"]
