"""The mapper, recorder and outbox relay: the steps between a connector's envelope and the
shared record's change events."""
