"""Dagster assets: snapshot → restored instance → masked/<table> → staging database → retired staging."""
