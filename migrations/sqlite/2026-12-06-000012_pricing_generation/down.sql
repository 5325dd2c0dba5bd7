DROP TABLE pricing_generations;
