#!/usr/bin/env python3
"""moto's server, with DynamoDB's single-item operations made atomic.

DynamoDB applies each operation on an item atomically: an `ADD` never loses a concurrent one,
and a condition is checked against the item as it is. moto's threaded server applies them in
Python without a lock, so concurrent UpdateItems on one item (the counters of a run, say) can
lose an update now and then. The local stack serialises them; everything else is moto as
released. Run it with the virtualenv's Python and moto_server's arguments.
"""

import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_ITEM_OPERATIONS = threading.RLock()


def _serialised(method):
    def locked(self, *args, **kwargs):
        with _ITEM_OPERATIONS:
            return method(self, *args, **kwargs)

    locked.__name__ = method.__name__
    locked.__doc__ = method.__doc__
    return locked


for _name in ("put_item", "update_item", "delete_item", "get_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _serialised(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.exit(main())
