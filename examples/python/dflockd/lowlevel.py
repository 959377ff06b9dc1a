"""The reference client's low-level functions (dflockd_client._sync: open_conn,
authenticate, acquire, release, renew, enqueue, wait, stats and the sem_*
variants), same signatures and results, one library call each."""

from .client import (  # noqa: F401
    Grant,
    SyncConn,
    acquire,
    authenticate,
    enqueue,
    open_conn,
    release,
    renew,
    sem_acquire,
    sem_enqueue,
    sem_release,
    sem_renew,
    sem_wait,
    stats,
    wait,
)
