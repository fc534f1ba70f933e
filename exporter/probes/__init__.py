"""Measurements on the user's CPU that decide which optional export formats the setup wizard offers."""
