"""Courses, lessons, enrollments and progress."""
