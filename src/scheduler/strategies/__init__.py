"""Execution strategies: how a claimed run actually does its work (shell commands, agent turns)."""
