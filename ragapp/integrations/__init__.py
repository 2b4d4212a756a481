"""Adapters for other frameworks (LangChain). May import retrieve and below; nothing imports them."""
